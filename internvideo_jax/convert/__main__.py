r"""python -m internvideo_jax.convert {import,export,inspect}: VideoMAE, UniFormerV2 and InternVideo
multimodal weights, in and out.

Examples:
  # official VideoMAE / InternVideo-MAE / VideoMAE V2 .pth (pretraining layout) -> orbax params
  # checkpoint; the size is read off the tensors (--size B would be checked against them)
  python -m internvideo_jax.convert import --src videomae_vit_b_k400_pretrain.pth \
      --model videomae_pretrain --out /ckpt/vmae_b_params
  # the EMA copy of a file that holds 'model' and 'model_ema'
  python -m internvideo_jax.convert import --src checkpoint-best.pth --weights model_ema \
      --model videomae_classifier --out /ckpt/vmae_ema
  # HF transformers directory (config.json + safetensors/.bin) of a fine-tuned classifier
  python -m internvideo_jax.convert import --src ./videomae-base-finetuned-kinetics \
      --model videomae_classifier --out /ckpt/vmae_b_k400_params
  # our training run (latest checkpoint of a workdir) -> HF directory or official .pth
  python -m internvideo_jax.convert export --src workdirs/demo --to hf --out ./hf_export
  python -m internvideo_jax.convert export --src workdirs/demo --to pth --out ./export.pth
  # official UniFormerV2 .pyth -> orbax {'params', 'batch_stats'}: width, depth, resolution,
  # global UniBlocks (e.g. SthV2's 8 on layers 4-11), local blocks, temporal kernel, the frozen
  # variant and classes read off the tensors; OUT/model.json describes it for
  # --config.model.size=init_from
  python -m internvideo_jax.convert import --src ssv2_b16_f16x224.pyth \
      --model uniformerv2_classifier --out /ckpt/uniformerv2_ssv2_b16
  # a UniFormerV2 fine-tuning run -> official .pyth (runs in PyTorch with
  # internvideo_jax.torch_models.uniformerv2.UniFormerV2, load_state_dict strict)
  python -m internvideo_jax.convert export --src workdirs/demo/uniformerv2 --to pth --out u.pyth
  # an InternVideo multimodal checkpoint (Lightning: 'clip.*' video + text towers,
  # 'caption_decoder.*') -> ours; the masked-language-modelling token is left out knowingly
  python -m internvideo_jax.convert import --src internvideo_mm_b16.ckpt \
      --model internvideo_multimodal --frames 8 \
      --drop-prefix clip.text_mask_embedding --out /ckpt/mm_b16
  # a CMA run -> one .pth (official VideoMAE and UniFormerV2 keys + the gated blocks)
  python -m internvideo_jax.convert export --src workdirs/demo/cma --to pth --out cma.pth
  # print a checkpoint's tree, shapes and dtypes (orbax dir, workdir, .pth, .safetensors, HF dir)
  python -m internvideo_jax.convert inspect workdirs/demo

Nothing is ever written into a training workdir (a directory holding checkpoints/, metrics.jsonl
or a run's config.json), nor over an existing non-empty --out unless --overwrite is given; the
new file or directory replaces the old one only once it is complete.

Files are unpickled weights-only (tensors, containers, argparse.Namespace, paths, NumPy values);
another pickled object is refused by name unless --trust-checkpoint. Which entry holds the weights
('model', 'module', 'state_dict', 'model_state', 'model_ema') is printed, with the others.

Imports are strict: every tensor consumed, every parameter filled, or the command fails listing
missing, unexpected and shape-mismatched keys.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from internvideo_jax.convert import registry
# the shared plumbing (convert/cli_common.py) and the VideoMAE family's helpers, importable from
# here as before; cmd_import calls import_params and save_params through this module's globals
from internvideo_jax.convert.cli_common import (abstract_variables, as_jax_arrays,  # noqa: F401
                                               import_shardings, known_size, parse_mesh,
                                               read_weights, save_params, save_torch, say_size)
from internvideo_jax.convert.common import (ConvertUserError, SourceNotFound,  # noqa: F401
                                           UsageError, flatten)
from internvideo_jax.convert.outputs import check_output, replacing
from internvideo_jax.convert.reading import choose_weights, read_hf_dir, read_torch_file
from internvideo_jax.convert.videomae import (build_model, size_from_params,  # noqa: F401
                                             target_params, videomae_variables)
from internvideo_jax.infra.sharding import describe_placement
from internvideo_jax.models import architecture
from internvideo_jax.training.checkpointing import load_variables


# ---- commands: each model family's import and export live in its module (convert/registry.py) --
def import_params(a) -> tuple[dict, dict, dict]:
    """--src as our parameter tree (numpy leaves, possibly views into the source tensors; for
    UniFormerV2 {'params', 'batch_stats'}), the model's boxed abstract variables and its
    description (models/architecture.py, saved as OUT/model.json)."""
    return registry.for_model(a.model).import_fn(a)


def cmd_import(a) -> None:
    if not os.path.exists(a.src):
        raise SourceNotFound(f"--src {a.src}: no such file or directory")
    check_output(a.out, a.overwrite)  # before any weight is read
    if a.mesh:
        parse_mesh(a.mesh)  # a malformed --mesh, too
    imported, boxed, description = import_params(a)
    # import_params gives params (or {'params', 'batch_stats'} for UniFormerV2); shardings match
    wrapped = "params" not in imported
    tree = {"params": imported} if wrapped else imported
    shardings = import_shardings(a.mesh, boxed, tree) if a.mesh else None
    del boxed
    del imported
    tree = as_jax_arrays(tree, shardings)  # the source state dict is gone after the call
    params = tree["params"] if wrapped else tree
    if a.mesh:
        print(describe_placement(f"params over mesh {a.mesh}", tree))
    with replacing(a.out, a.overwrite) as staging:
        save_params(params, staging)
        architecture.write(staging, dict(description, source=os.path.abspath(a.src)))
    n = sum(int(np.prod(v.shape)) for v in flatten(params).values())
    print(f"imported {len(flatten(params))} tensors ({n:,} parameters) into {a.out} "
          f"(architecture in {os.path.join(a.out, architecture.FILE)})")


def cmd_export(a) -> None:
    if not os.path.exists(a.src):
        raise SourceNotFound(f"--src {a.src}: no such file or directory")
    check_output(a.out, a.overwrite)  # before any weight is read
    variables, meta = load_variables(a.src, scanned=False)  # the official layouts are per layer
    family = registry.for_export(variables["params"])
    if a.to not in family.formats:
        raise UsageError(family.format_error or f"{family.label} exports with --to "
                         f"{' or '.join(family.formats)} only.")
    family.export_fn(variables, meta, a)


def cmd_inspect(a) -> None:
    if not os.path.exists(a.src):
        raise SourceNotFound(f"{a.src}: no such file or directory")
    if os.path.isdir(a.src) and os.path.exists(os.path.join(a.src, "config.json")) and not \
            os.path.isdir(os.path.join(a.src, "checkpoints")):
        tree, _ = read_hf_dir(a.src)
    elif os.path.isdir(a.src):
        tree, _ = load_variables(a.src)
        if set(tree) == {"params"}:
            tree = tree["params"]
        tree = {"/".join(k): v for k, v in flatten(tree).items()}
    else:
        tree, report = choose_weights(read_torch_file(a.src, a.trust_checkpoint), a.weights)
        print(report)
    total = 0
    for k in sorted(tree):
        v = tree[k]
        shape = tuple(v.shape)
        total += int(np.prod(shape))
        print(f"{k:70s} {str(shape):22s} {str(v.dtype)}")
    print(f"{len(tree)} tensors, {total:,} parameters")


def reading_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="",
                   help="the entry of the file that holds the weights, e.g. model_ema (default: "
                        "the first of model, module, state_dict, model_state, model_ema; the "
                        "choice and the other entries are printed)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle any object the file holds (can run code: only for files from a "
                        "source you trust); without it, objects other than tensors, "
                        "argparse.Namespace, paths and NumPy values are refused")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m internvideo_jax.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("import", help="PyTorch (.pth / HF dir) -> orbax params checkpoint")
    i.add_argument("--src", required=True)
    i.add_argument("--model", required=True, choices=registry.model_names())
    i.add_argument("--size", default="", help="optional: the size is read off the tensors; "
                   "given, it is checked against them: " + registry.sizes_help())
    i.add_argument("--num-classes", type=int, default=0)
    i.add_argument("--frames", type=int, default=16)
    i.add_argument("--image-size", type=int, default=224)
    i.add_argument("--out", required=True, help="the orbax params directory to write; never "
                   "a training workdir")
    i.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty --out (never a training workdir)")
    i.add_argument("--mesh", default="",
                   help="place the imported arrays sharded over a mesh of the devices, by the "
                        "rules table, before saving: e.g. fsdp=8 or data=2,fsdp=-1,tensor=2 "
                        "(default: one device)")
    i.add_argument("--drop-prefix", action="append", default=[],
                   help="internvideo_multimodal, internvideo_qa: leave out tensors under this key "
                        "prefix (full key, e.g. clip.text_mask_embedding or caption_decoder.); "
                        "listed, never silent")
    reading_flags(i)
    e = sub.add_parser("export", help="our checkpoint -> HF directory or official .pth")
    e.add_argument("--src", required=True, help="workdir, checkpoint step dir or params dir")
    e.add_argument("--to", required=True, choices=registry.export_formats())
    e.add_argument("--frames", type=int, default=16, help="if the workdir has no config.json")
    e.add_argument("--image-size", type=int, default=224)
    e.add_argument("--out", required=True, help="the HF directory or .pth file to write; never "
                   "into a training workdir")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty --out (never a training workdir)")
    s = sub.add_parser("inspect", help="print a checkpoint's tensors")
    s.add_argument("src")
    reading_flags(s)
    return p


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    try:
        {"import": cmd_import, "export": cmd_export, "inspect": cmd_inspect}[a.command](a)
    except ConvertUserError as err:  # a user mistake: the message, no traceback; bugs keep theirs
        message = f"error: {err}"
        print(message, file=sys.stderr)
        exit_ = SystemExit(message)  # str() is the message (for callers and tests) ...
        exit_.code = 2  # ... the status is 2, as for argparse's usage errors
        raise exit_ from None


if __name__ == "__main__":
    main()
