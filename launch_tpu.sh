#!/usr/bin/env bash
# Launch internvideo-jax training on a Cloud TPU VM of any size (one host or a pod slice).
#
#   ./launch_tpu.sh [--dry-run] COMMAND --name NAME --zone ZONE [options] [-- extra main.py flags]
#
# Commands (each acts on every worker of the TPU VM unless noted):
#   create   create the TPU VM (reused when it already exists)      --type v5p-64 [--version V]
#            [--spot] [--project P]
#   setup    copy this checkout (git archive of HEAD: every host gets the same commit) and
#            install the pinned requirements plus jax's TPU runtime in ~/internvideo-jax/.venv;
#            --bucket B mounts gs://B at /gcs/B on every worker (gcsfuse) for the workdir
#   train    start training on every worker (background, logs in ~/train.log) with
#            INTERNVIDEO_DISTRIBUTED=auto (jax.distributed finds the pod itself; main.py then
#            checks every host runs the same code and versions)   --config FILE:PRESET
#            [--workdir DIR: a path every worker sees, default /gcs/BUCKET/runs/NAME]
#   logs     stream host 0's log (metrics are written by host 0 only)
#   stop     stop training on every worker (checkpoints already written stay)
#   delete   delete the TPU VM
#   all      create, setup, train, logs
# --dry-run prints every gcloud command instead of running it.
#
# Worked example (v5p-64 = 32 chips on 8 hosts; VideoMAE ViT-H pretraining, InternVideo's recipe):
#   ./launch_tpu.sh all --name vmae-h --zone us-east5-a --type v5p-64 --bucket my-bucket \
#       --config experiments/videomae_pretrain.py:vit_h -- --config.data.data_dir=/gcs/my-bucket/data
#   ./launch_tpu.sh stop --name vmae-h --zone us-east5-a; ./launch_tpu.sh delete ...
# Check first that it fits (no TPU needed):
#   python -m internvideo_jax.plan --config experiments/videomae_pretrain.py:vit_h --topology v5p:2x4x4
set -euo pipefail

DRY_RUN=0 NAME="" ZONE="" TYPE="" VERSION="" PROJECT="" SPOT=0 BUCKET="" CONFIG="" WORKDIR=""
COMMAND=""
EXTRA=()
REMOTE_DIR="internvideo-jax"
JAX_VERSION="0.10.2"  # = requirements.txt; jax[tpu] pins the matching libtpu

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "launch_tpu.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME="$2"; shift ;;
    --zone) ZONE="$2"; shift ;;
    --type) TYPE="$2"; shift ;;
    --version) VERSION="$2"; shift ;;
    --project) PROJECT="$2"; shift ;;
    --spot) SPOT=1 ;;
    --bucket) BUCKET="$2"; shift ;;
    --config) CONFIG="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    create|setup|train|logs|stop|delete|all) COMMAND="$1" ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[[ -n "$COMMAND" ]] || die "no command given: create, setup, train, logs, stop, delete or all"
[[ -n "$NAME" && -n "$ZONE" ]] || die "--name and --zone are required"

run() {  # print (dry run) or execute a command given as separate words
  if [[ "$DRY_RUN" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

GCLOUD=(gcloud compute tpus tpu-vm)
SCOPE=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && SCOPE+=(--project "$PROJECT")

default_version() {  # the TPU VM software image by generation
  case "$1" in
    v4*) echo "tpu-ubuntu2204-base" ;;
    v5p*) echo "v2-alpha-tpuv5" ;;
    v5litepod*|v5e*) echo "v2-alpha-tpuv5-lite" ;;
    v6e*) echo "v2-alpha-tpuv6e" ;;
    *) die "no default --version for --type $1: pass --version" ;;
  esac
}

ssh_all() { run "${GCLOUD[@]}" ssh "$NAME" "${SCOPE[@]}" --worker=all --command "$1"; }

cmd_create() {
  [[ -n "$TYPE" ]] || die "create needs --type (e.g. v5p-64, v4-32, v5litepod-16)"
  if [[ "$DRY_RUN" == 0 ]] && "${GCLOUD[@]}" describe "$NAME" "${SCOPE[@]}" >/dev/null 2>&1; then
    echo "TPU VM $NAME exists: reusing it"; return
  fi
  local args=(create "$NAME" "${SCOPE[@]}" --accelerator-type "$TYPE"
              --version "${VERSION:-$(default_version "$TYPE")}")
  [[ "$SPOT" == 1 ]] && args+=(--spot)
  run "${GCLOUD[@]}" "${args[@]}"
}

cmd_setup() {
  local here tarball
  here="$(cd "$(dirname "$0")" && pwd)"
  tarball="/tmp/${REMOTE_DIR}-$(git -C "$here" rev-parse --short HEAD).tar.gz"
  if [[ -n "$(git -C "$here" status --porcelain --untracked-files=no)" ]]; then
    echo "warning: uncommitted changes are NOT copied (git archive of HEAD)" >&2
  fi
  run git -C "$here" archive --format=tar.gz --prefix="$REMOTE_DIR/" -o "$tarball" HEAD
  run "${GCLOUD[@]}" scp "$tarball" "$NAME:~/code.tar.gz" "${SCOPE[@]}" --worker=all
  ssh_all "rm -rf ~/$REMOTE_DIR && tar xzf ~/code.tar.gz -C ~ && cd ~/$REMOTE_DIR && \
python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt -e . && \
.venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION'"
  if [[ -n "$BUCKET" ]]; then
    ssh_all "sudo mkdir -p /gcs/$BUCKET && sudo chown \$USER /gcs/$BUCKET && \
(mountpoint -q /gcs/$BUCKET || gcsfuse --implicit-dirs $BUCKET /gcs/$BUCKET)"
  fi
}

cmd_train() {
  [[ -n "$CONFIG" ]] || die "train needs --config experiments/FILE.py:PRESET"
  local workdir="${WORKDIR:-}"
  if [[ -z "$workdir" ]]; then
    [[ -n "$BUCKET" ]] || die "train needs --workdir (a path every worker sees) or --bucket"
    workdir="/gcs/$BUCKET/runs/$NAME"
  fi
  local extra=""
  [[ ${#EXTRA[@]} -gt 0 ]] && extra="$(printf '%q ' "${EXTRA[@]}")"
  ssh_all "cd ~/$REMOTE_DIR && INTERNVIDEO_DISTRIBUTED=auto nohup .venv/bin/python -m \
internvideo_jax.main --config $CONFIG --workdir $workdir $extra > ~/train.log 2>&1 < /dev/null &"
}

cmd_logs() {
  run "${GCLOUD[@]}" ssh "$NAME" "${SCOPE[@]}" --worker=0 --command "tail -n +1 -F ~/train.log"
}

cmd_stop() { ssh_all "pkill -f internvideo_jax.main || true"; }

cmd_delete() { run "${GCLOUD[@]}" delete "$NAME" "${SCOPE[@]}" --quiet; }

case "$COMMAND" in
  create) cmd_create ;;
  setup) cmd_setup ;;
  train) cmd_train ;;
  logs) cmd_logs ;;
  stop) cmd_stop ;;
  delete) cmd_delete ;;
  all) cmd_create; cmd_setup; cmd_train; cmd_logs ;;
esac
