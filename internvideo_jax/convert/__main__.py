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
import dataclasses
import json
import os
import sys

import numpy as np

from internvideo_jax.checkpointing import load_variables
from internvideo_jax.convert import architecture as arch
from internvideo_jax.convert import videomae as cv
from internvideo_jax.convert.common import (ConvertUserError, SourceNotFound, UsageError,
                                           flatten)
from internvideo_jax.convert.outputs import check_output, replacing
from internvideo_jax.convert.reading import (choose_weights, read_hf_dir, read_torch_file,
                                            strip_wrappers)
from internvideo_jax.models import architecture
from internvideo_jax.models.videomae import VideoMAESize


# ---- model from a size --------------------------------------------------------------------------
def size_from_params(params: dict) -> "VideoMAESize":
    """Read the architecture off our own parameter tree (heads included: qkv is (D, 3, H, hd))."""
    enc = params["encoder"]
    pt, p, _, _, dim = enc["patch_embed"]["kernel"].shape
    blocks = enc["transformer"]
    depth = len(blocks)
    heads = blocks["blocks_0"]["attn"]["qkv"]["kernel"].shape[2]
    mlp = blocks["blocks_0"]["mlp"]["fc1"]["kernel"].shape[1]
    dec = dict(decoder_dim=0, decoder_heads=0, decoder_depth=0)
    if "decoder" in params:
        d = params["decoder"]["transformer"]
        dec = dict(decoder_dim=params["mask_token"].shape[-1], decoder_depth=len(d),
                   decoder_heads=d["blocks_0"]["attn"]["qkv"]["kernel"].shape[2] if d else 1)
    return VideoMAESize(dim=dim, depth=depth, heads=heads, mlp_ratio=mlp / dim, patch=p,
                        tubelet=pt, **dec)


def build_model(kind: str, size, num_classes: int):
    from internvideo_jax.models import videomae
    if kind == "videomae_pretrain":
        return videomae.VideoMAEPretrain(size)
    if kind == "videomae_classifier":
        return videomae.VideoMAEClassifier(size, num_classes)
    raise UsageError(f"unknown --model {kind!r}")


def abstract_variables(model, *args) -> dict:
    """model.init's variables as ShapeDtypeStructs, boxed with their logical axis names: unboxed,
    the target of the strict import; boxed, the shardings when --mesh asks for them."""
    import jax
    return jax.eval_shape(model.init, jax.random.key(0), *args)


def videomae_variables(model, frames: int, image: int) -> dict:
    """abstract_variables of a VideoMAE model for clips of `frames` x `image`^2."""
    import jax
    import jax.numpy as jnp
    video = jax.ShapeDtypeStruct((1, frames, image, image, 3), jnp.float32)
    args = (video,)
    if hasattr(model, "mask_ratio"):
        t, h, w = frames // model.size.tubelet, image // model.size.patch, image // model.size.patch
        args += (jax.ShapeDtypeStruct((1, t * h * w), jnp.bool_),)
    return abstract_variables(model, *args)


def target_params(model, frames: int, image: int) -> dict:
    import flax.linen as nn
    return nn.meta.unbox(videomae_variables(model, frames, image))["params"]


def read_weights(a) -> dict:
    """--src's state dict: the entry --weights names (or the first of reading.WEIGHT_ENTRIES),
    said on stdout with what else the file holds; `module.` / `_orig_mod.` wrappers stripped."""
    state_dict, report = choose_weights(read_torch_file(a.src, a.trust_checkpoint), a.weights)
    print(report)
    return strip_wrappers(state_dict)


def say_size(family: str, name: str | None, what: str, given: str) -> None:
    print(f"{family}: {what}" + (f" = size {name}" if name else " (no named size: stored in "
                                 "model.json; fine-tune it with --config.model.size=init_from)")
          + ("" if given else ", read off the tensors"))


def import_uniformerv2(a) -> tuple[dict, dict, dict]:
    """An official UniFormerV2 .pyth/.pth -> our variables {'params', 'batch_stats'}.

    Everything is read off the tensors (convert/architecture.py): width, depth, patch, resolution,
    the global UniBlocks (one per dec.j, on the last layers), local UniBlocks, conv1's temporal
    kernel (3 = the temporal downsample, stride 2), the frozen-backbone variant (no balance) and
    the classes. Returns (variables, the model's boxed abstract variables, the description)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from internvideo_jax.convert import uniformerv2 as cu
    from internvideo_jax.models import uniformerv2 as u
    sd = cu.strip_prefixes(read_weights(a), cu.WRAPPER_PREFIXES)
    chosen = known_size(u.get_size, a.size) if a.size else None
    found = arch.uniformerv2_checkpoint(sd, (chosen.width, chosen.heads) if chosen else None)
    size = found.size
    if chosen:
        arch.check_against(size, dataclasses.replace(chosen, embed_dim=size.embed_dim), a.size,
                           u.SIZES, "UniFormerV2")
    first, last = size.return_list[0], size.return_list[-1]
    say_size("UniFormerV2", found.name,
             f"width {size.width}, {size.layers} layers, {size.heads} heads, patch {size.patch}, "
             f"{size.image_size}px, {len(size.return_list)} global UniBlocks on layers "
             f"{first}-{last}, conv1 temporal kernel {found.temporal_kernel} stride "
             f"{found.temporal_stride}" + (", local UniBlocks" if found.local else "")
             + (", the frozen-backbone variant (no balance)" if found.frozen else "")
             + f", {a.num_classes or found.num_classes} classes", a.size)
    num_classes = a.num_classes or found.num_classes
    model = u.UniFormerV2Classifier(size, num_classes, temporal_kernel=found.temporal_kernel,
                                    temporal_stride=found.temporal_stride, local=found.local,
                                    frozen=found.frozen)
    frames = a.frames - a.frames % found.temporal_stride
    video = jax.ShapeDtypeStruct((1, frames, size.image_size, size.image_size, 3), jnp.float32)
    boxed = abstract_variables(model, video)
    description = architecture.describe(
        "uniformerv2_classifier", size, found.name, num_classes=num_classes,
        temporal_kernel=found.temporal_kernel, temporal_stride=found.temporal_stride,
        local=found.local, frozen=found.frozen)
    return cu.import_official(sd, nn.meta.unbox(boxed)), boxed, description


def as_jax_arrays(params: dict, shardings: dict | None = None) -> dict:
    """numpy leaves (views into the source tensors) -> jax arrays, one at a time: each source
    tensor is freed once its last view is converted, so the host holds ~1x the model throughout.
    (Saving numpy leaves would make orbax copy every array twice.) With `shardings` (a tree like
    params of NamedShardings) each array is placed sharded over its mesh."""
    import jax
    import jax.numpy as jnp
    from internvideo_jax.convert.common import unflatten
    flat = flatten(params)
    del params
    placement = flatten(shardings) if shardings is not None else {}
    for key in list(flat):
        flat[key] = (jax.device_put(flat[key], placement[key]) if key in placement
                     else jnp.asarray(flat[key]))
    return unflatten(flat)


def parse_mesh(text: str) -> dict:
    """'fsdp=8' or 'data=2,fsdp=-1,tensor=2' -> a mesh config (unnamed axes are 1)."""
    from internvideo_jax.sharding import MESH_AXES
    config = {axis: 1 for axis in MESH_AXES}
    for part in text.split(","):
        axis, _, size = part.partition("=")
        if axis.strip() not in config or not size.strip().lstrip("-").isdigit():
            raise UsageError(f"--mesh {text!r}: expected comma-separated axis=size with axes "
                             f"{MESH_AXES}, e.g. fsdp=8 or data=2,fsdp=-1")
        config[axis.strip()] = int(size)
    return config


def import_shardings(mesh_text: str, boxed: dict, imported: dict) -> dict:
    """NamedShardings from the one rules table for the imported variables (their model's boxed
    abstract variables), over a mesh of this process's devices (all processes' devices under
    jax.distributed)."""
    from internvideo_jax import sharding
    mesh = sharding.make_mesh(parse_mesh(mesh_text))
    shardings = sharding.logical_shardings(boxed, mesh)
    return {collection: shardings[collection] for collection in imported}


def save_params(params: dict, out: str) -> None:
    """An orbax params checkpoint, written with at most 1 GB of arrays in flight."""
    import orbax.checkpoint as ocp
    handler = ocp.StandardCheckpointHandler(save_concurrent_gb=1)
    with ocp.Checkpointer(handler) as ckptr:
        ckptr.save(os.path.abspath(out), args=ocp.args.StandardSave(params), force=True)


def import_multimodal(a) -> tuple[dict, dict, dict]:
    """An InternVideo multimodal Lightning checkpoint ('clip.*' and 'caption_decoder.*' keys) ->
    VideoTextModel params; the caption decoder is built when the file has one (and it is not
    left out with --drop-prefix caption_decoder.). Returns (params, boxed abstract variables,
    the description)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from internvideo_jax.convert import multimodal as cm
    from internvideo_jax.models import multimodal
    checkpoint = read_weights(a)
    keys = cm.unwrap(checkpoint)
    chosen = known_size(multimodal.get_size, a.size) if a.size else None
    size, name, _ = arch.multimodal_size(keys, chosen)
    caption = any(k.startswith(cm.DECODER) and not k.startswith(tuple(a.drop_prefix))
                  for k in keys)
    if chosen:
        if not caption:  # the decoder is not in the file (or left out): not compared
            chosen = dataclasses.replace(chosen, decoder=size.decoder)
        arch.check_against(size, chosen, a.size, multimodal.SIZES, "InternVideo multimodal")
    v, t = size.video, size.text
    say_size("InternVideo multimodal", name,
             f"video width {v.width}, {v.layers} layers, patch {v.patch}, {v.image_size}px, "
             f"{len(v.return_list)} global UniBlocks; text width {t.width}, {t.layers} layers; "
             f"embedding {v.embed_dim}", a.size)
    model = multimodal.VideoTextModel(size, caption=caption)
    video = jax.ShapeDtypeStruct((1, a.frames, v.image_size, v.image_size, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, t.context_length), jnp.int32)
    boxed = abstract_variables(model, video, ids)
    print("multimodal: video tower, text tower"
          + (f", caption decoder ({size.decoder.layers} layers)" if caption else
             " (no caption decoder in the file: train with model.caption_weight=0)"))
    description = architecture.describe("internvideo_multimodal", size, name, caption=caption)
    return cm.import_internvideo(checkpoint, nn.meta.unbox(boxed)["params"],
                                 tuple(a.drop_prefix)), boxed, description


def known_size(get, name: str, known=None):
    """get(name), an unknown size reported as a UsageError (the models raise ValueError or
    KeyError, naming the known ones)."""
    try:
        return get(name)
    except (KeyError, ValueError) as e:
        raise UsageError(f"--size {name!r}: known sizes {known}" if known else
                         f"--size: {e.args[0] if e.args else e}") from None


# ---- commands -----------------------------------------------------------------------------------
def import_videomae(a) -> tuple[dict, dict, dict]:
    """An official VideoMAE / InternVideo-MAE / VideoMAE V2 file or an HF transformers directory
    -> our params; the size read off the tensors (or config.json)."""
    import flax.linen as nn
    from internvideo_jax.models.videomae import SIZES
    pretraining = a.model == "videomae_pretrain"
    if os.path.isdir(a.src):
        sd, hf = read_hf_dir(a.src)
        size = VideoMAESize(
            dim=hf["hidden_size"], depth=hf["num_hidden_layers"], heads=hf["num_attention_heads"],
            decoder_dim=hf.get("decoder_hidden_size", 0) if pretraining else 0,
            decoder_heads=hf.get("decoder_num_attention_heads", 0) if pretraining else 0,
            decoder_depth=hf.get("decoder_num_hidden_layers", 0) if pretraining else 0,
            mlp_ratio=hf["intermediate_size"] / hf["hidden_size"], patch=hf["patch_size"],
            tubelet=hf["tubelet_size"])
        name = arch.name_of(size, SIZES)
        if abs(hf.get("layer_norm_eps", 1e-12) - 1e-6) > 1e-9:
            print(f"warning: config.json has layer_norm_eps={hf.get('layer_norm_eps')}; the "
                  f"official models (and ours) use 1e-6", file=sys.stderr)
        num_classes = len(hf.get("id2label", {})) or a.num_classes
        convert = cv.import_hf
    else:
        sd = cv.strip_prefixes(read_weights(a), cv.WRAPPER_PREFIXES)
        size, name = arch.videomae_size(sd, pretraining, SIZES.get(a.size))
        num_classes = a.num_classes or (sd["head.weight"].shape[0] if "head.weight" in sd else 0)
        convert = cv.import_official
    if a.size:
        chosen = known_size(lambda n: SIZES[n], a.size, sorted(SIZES))
        if not pretraining:
            chosen, size = arch.videomae_encoder_only(chosen), arch.videomae_encoder_only(size)
        arch.check_against(size, chosen, a.size, {n: arch.videomae_encoder_only(s) if not
                                                  pretraining else s for n, s in SIZES.items()},
                           "VideoMAE")
    say_size("VideoMAE", name, f"width {size.dim}, {size.depth} layers, {size.heads} heads, patch "
             f"{size.patch}, tubelet {size.tubelet}, MLP {size.mlp_dim}" + (
                 f"; decoder width {size.decoder_dim}, {size.decoder_depth} layers"
                 if pretraining else f"; {num_classes} classes"), a.size or os.path.isdir(a.src))
    model = build_model(a.model, size, num_classes)
    boxed = videomae_variables(model, a.frames, a.image_size)
    description = architecture.describe(a.model, size, name, num_classes=num_classes)
    return convert(sd, nn.meta.unbox(boxed)["params"]), boxed, description


IMPORTERS = {"videomae_pretrain": import_videomae, "videomae_classifier": import_videomae,
             "uniformerv2_classifier": import_uniformerv2,
             "internvideo_multimodal": import_multimodal}


def import_params(a) -> tuple[dict, dict, dict]:
    """--src as our parameter tree (numpy leaves, possibly views into the source tensors; for
    UniFormerV2 {'params', 'batch_stats'}), the model's boxed abstract variables and its
    description (models/architecture.py, saved as OUT/model.json)."""
    return IMPORTERS[a.model](a)


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
        from internvideo_jax.sharding import describe_placement
        print(describe_placement(f"params over mesh {a.mesh}", tree))
    with replacing(a.out, a.overwrite) as staging:
        save_params(params, staging)
        architecture.write(staging, dict(description, source=os.path.abspath(a.src)))
    n = sum(int(np.prod(v.shape)) for v in flatten(params).values())
    print(f"imported {len(flatten(params))} tensors ({n:,} parameters) into {a.out} "
          f"(architecture in {os.path.join(a.out, architecture.FILE)})")


def save_torch(sd: dict, out: str, overwrite: bool) -> None:
    """torch.save(sd) to out, replacing it only once the file is complete."""
    import torch
    with replacing(out, overwrite) as staging:
        torch.save(sd, staging)


def export_uniformerv2(variables: dict, out: str, overwrite: bool = False) -> None:
    """Our UniFormerV2 classifier variables -> an official .pyth ({'model_state': state dict},
    float32), loadable with strict=True by internvideo_jax.torch_models.uniformerv2.UniFormerV2."""
    import torch
    from internvideo_jax.convert import uniformerv2 as cu
    sd = {k: torch.from_numpy(np.array(v)) for k, v in cu.export_official(variables).items()}
    save_torch({"model_state": sd}, out, overwrite)
    print(f"wrote {len(sd)} tensors (official UniFormerV2 layout, float32) to {out}")


def cmd_export(a) -> None:
    if not os.path.exists(a.src):
        raise SourceNotFound(f"--src {a.src}: no such file or directory")
    check_output(a.out, a.overwrite)  # before any weight is read
    variables, meta = load_variables(a.src, scanned=False)  # the official layouts are per layer
    if "backbone" in variables["params"]:  # a UniFormerV2 classifier
        if a.to != "pth":
            raise UsageError("UniFormerV2 has no HF transformers implementation: export it with "
                             "--to pth (the official .pyth layout).")
        export_uniformerv2(variables, a.out, a.overwrite)
        return
    if {"videomae", "uniformerv2"} <= set(variables["params"]):  # Cross-Model Attention
        if a.to != "pth":
            raise UsageError("CMA exports with --to pth only (torch_models.cma layout).")
        import torch
        from internvideo_jax.convert import cma
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in cma.export_torch(variables).items()}
        save_torch({"model": sd}, a.out, a.overwrite)
        print(f"wrote {len(sd)} tensors (videomae.*, uniformerv2.* official, CMA blocks; "
              f"float32) to {a.out}: load with internvideo_jax.torch_models.cma")
        return
    if "textual" in variables["params"]:  # a multimodal video-text model
        if a.to != "pth":
            raise UsageError("a multimodal model exports with --to pth only (the InternVideo "
                             "Lightning layout).")
        import torch
        from internvideo_jax.convert import multimodal as cm
        sd = {k: torch.from_numpy(v) for k, v in cm.export_internvideo(variables["params"]).items()}
        save_torch({"state_dict": sd}, a.out, a.overwrite)
        print(f"wrote {len(sd)} tensors (InternVideo 'clip.'/'caption_decoder.' layout, float32) "
              f"to {a.out}")
        return
    params = variables["params"]
    size = size_from_params(params)
    if a.to == "pth":
        import torch
        sd = {k: torch.from_numpy(np.array(v)) for k, v in cv.export_official(params).items()}
        save_torch({"model": sd}, a.out, a.overwrite)
        print(f"wrote {len(sd)} tensors (official layout, float32) to {a.out}")
        return
    from safetensors.numpy import save_file
    data = meta.get("config", {}).get("data", {})
    frames, image = data.get("num_frames", a.frames), data.get("crop_size", a.image_size)
    num_classes = params["head"]["kernel"].shape[1] if "head" in params else None
    with replacing(a.out, a.overwrite) as staging:
        os.makedirs(staging)
        save_file(cv.export_hf(params), os.path.join(staging, "model.safetensors"))
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump(cv.hf_config(size, num_frames=frames, image_size=image,
                                   num_classes=num_classes), f, indent=1)
    print(f"wrote an HF transformers directory to {a.out} ({frames} frames, {image}px)")


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
    i.add_argument("--model", required=True,
                   choices=["videomae_pretrain", "videomae_classifier", "uniformerv2_classifier",
                            "internvideo_multimodal"])
    i.add_argument("--size", default="", help="optional: the size is read off the tensors; "
                   "given, it is checked against them: tiny, S, B, L, H, H_internvideo, g "
                   "(VideoMAE); tiny, B/16, L/14, L/14@336 (UniFormerV2, multimodal)")
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
                   help="internvideo_multimodal: leave out tensors under this key prefix (full "
                        "key, e.g. clip.text_mask_embedding or caption_decoder.); listed, never "
                        "silent")
    reading_flags(i)
    e = sub.add_parser("export", help="our checkpoint -> HF directory or official .pth")
    e.add_argument("--src", required=True, help="workdir, checkpoint step dir or params dir")
    e.add_argument("--to", required=True, choices=["hf", "pth"])
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
