#!/usr/bin/env bash
# The GPU half of issue 7's benchmarks in one call to a lent NVIDIA machine (H100/H200; about
# 10 minutes of its time): cuDNN attention taken and correct, bf16 training tracking float32
# (benchmarks/gpu_check.py), then the VideoMAE pretraining step in bf16 against HF transformers
# for ViT-S, ViT-B and ViT-L with MFU (benchmarks/train_step.py), then a short real training run.
#
# That machine has its own Python 3.12 with jax, torch (CUDA), transformers, flax and optax, and
# no package index. The rest of our requirements travel as wheels:
#   1. here, with pip's index:   bash benchmarks/gpu_session.sh --wheels   (.whl/, ~48 MB, ignored)
#      and, to catch a broken script before it costs device time (CPU, ~40 s):
#                                python benchmarks/gpu_check.py --dry-run
#   2. the device call:          command "bash benchmarks/gpu_session.sh", carry [".whl"],
#                                timeout_s 600; results come back under $OUT (*.md, *.log).
# Its jax is whatever that image holds (0.11.x when this was written); ours are pinned to the
# versions in requirements.txt and carried, jax itself cannot be (its CUDA plugin is too large).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--wheels" ]]; then
  # requirements.txt's pins for what the image lacks or holds at another version, then the
  # dependencies of those that the image lacks (versions as our CPU environment resolves them).
  carried='flax|optax|orbax-checkpoint|grain|tensorflow-datasets|array-record|ml-collections|av'
  carried+='|tensorboardX|ftfy|importlib_resources'
  pins=$(grep -E "^($carried)==" requirements.txt | sed 's/ *#.*//')
  extra="wcwidth==0.9.4 dm-tree==0.1.10 docstring_parser==0.18.0 googleapis-common-protos==1.76.0
         immutabledict==4.3.1 portpicker==1.6.0 simple-parsing==0.1.9 tensorflow-metadata==1.21.0
         termcolor==3.3.0 toml==0.10.2"
  rm -rf .whl && mkdir -p .whl
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl $pins $extra || exit 1
  # promise (tensorflow-datasets' dependency) is published as a source archive only.
  python3 -m pip wheel -q --no-deps -w .whl promise==2.3 || exit 1
  du -sh .whl && ls .whl
  exit 0
fi

OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "no .whl/: run 'bash $0 --wheels' here first, then carry .whl"; exit 2
fi
install() {  # install WHEELS...: into a fresh /tmp/site
  rm -rf /tmp/site && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site "$@"
}
imports_work() {  # the project's import chain and one jitted flax module on the device
  python3 -c "import sys, jax, flax, optax, orbax.checkpoint, torch, transformers, grain
import flax.linen as nn, jax.numpy as jnp
from internvideo_jax.training import train
from internvideo_jax.tasks import videomae_pretrain
y = jax.jit(lambda x: nn.Dense(8).init_with_output(jax.random.key(0), x)[0])(jnp.ones((2, 4)))
print('python', sys.version.split()[0], '| jax', jax.__version__, '| flax', flax.__version__,
      '| optax', optax.__version__, '| torch', torch.__version__, '| transformers',
      transformers.__version__, '|', jax.devices())"
}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
install .whl/*.whl || exit 1
if ! imports_work; then
  # Our pinned flax/optax/orbax may predate the image's jax: try the image's own instead.
  echo "== the pinned flax/optax/orbax-checkpoint failed on this jax; retrying with the image's"
  install $(ls .whl/*.whl | grep -v -E '/(flax|optax|orbax_checkpoint)-') || exit 1
  imports_work || exit 1
fi

status=0
# The device call's 600-s limit, less a margin: each step's timeout is cut to what is left of it.
BUDGET_S=${BUDGET_S:-575}
run() {  # run NAME TIMEOUT_S COMMAND...: stdout to $OUT/NAME.md (and here), stderr to NAME.log
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET_S - SECONDS))
  (( left < limit )) && limit=$left
  (( limit >= 20 )) || { echo "== $name skipped: ${left}s left of the call"; status=1; return; }
  echo "== $name (at ${SECONDS}s, up to ${limit}s): $*"
  timeout "$limit" "$@" 2>"$OUT/$name.log" | tee "$OUT/$name.md"
  local rc=${PIPESTATUS[0]}
  if [[ $rc != 0 ]]; then
    echo "== $name exited $rc; its stderr ends:"; tail -5 "$OUT/$name.log"; status=1
  fi
}
run gpu_check 150 python3 benchmarks/gpu_check.py
run train_step_S_B 240 python3 benchmarks/train_step.py --sizes S,B --batch 32 --dtype bfloat16 \
  --rounds 1 --repeats 5 --impls hf,ours,ours_xla_attention
run train_step_L 180 python3 benchmarks/train_step.py --sizes L --batch 16 --dtype bfloat16 \
  --rounds 1 --repeats 5 --impls hf,ours
# The trainer end to end on the GPU: the demo dataset built and decoded (PyAV), 20 bf16 steps with
# MFU logged; train_smoke.md's "attention as traced:" line says which kernels the model took.
run train_smoke 150 python3 -m internvideo_jax.main --config experiments/videomae_pretrain.py:tiny \
  --workdir /tmp/gpu_smoke --config.num_epochs=0.4 --config.data.data_dir=/tmp/gpu_smoke_data \
  --config.model.dtype=bfloat16
exit $status
