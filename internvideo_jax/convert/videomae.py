"""VideoMAE weights: official .pth layouts and HF transformers <-> our parameter trees.

One table maps our parameters to the official (MCG-NJU/VideoMAE) names and layouts
(`official_rules`); HF transformers' names are a renaming of the official ones (`hf_to_official`,
`official_to_hf`), with the fused qkv split into query/key/value (key has no bias).

Layouts (torch -> ours): Linear weight [out, in] -> kernel (in, out); qkv.weight [3D, D] ->
(D, 3, heads, head_dim); q_bias/v_bias [D] -> (heads, head_dim); attn.proj.weight [D, D] ->
(heads, head_dim, D); patch_embed.proj.weight [D, C, pt, p, p] -> (pt, p, p, C, D); LayerNorm
weight -> scale.

The AVA detector (--model videomae_detector, models/ava_head.py VideoMAEDetector) has no layout of
its own: the fine-tuned names with `norm` in place of fc_norm. Facts from
MCG-NJU/VideoMAE-Action-Detection, commit 15615dbcf365fc45a3230446833c3f4183eb7f41:
  - modeling_finetune.py, VisionTransformer: state dict patch_embed.proj.{weight, bias} (Conv3d
    [D, 3, 2, 16, 16]), blocks.i.{norm1, attn.{qkv.weight (no bias), q_bias, v_bias, proj},
    norm2, mlp.{fc1, fc2}}, norm.{weight, bias}, head.{weight [num_classes, D], bias}. No
    fc_norm tensor (`self.fc_norm = None`), no pos_embed (use_learnable_pos_emb is False, never
    passed by run_class_finetuning.py's create_model: the sinusoid table is a plain attribute),
    no gamma_1/gamma_2 (init_values 0), no cls_token; the RoI pooler (alphaction Pooler3d ->
    ROIAlign3d -> torchvision roi_align) and max_pooler hold no tensors. Sizes:
    vit_small/base/large/huge_patch16_224 = D 384/768/1024/1280, depth 12/12/24/32, heads
    6/12/16/16, mlp_ratio 4, qkv_bias; num_classes 80 (run_class_finetuning.py --nb_classes
    default); 16 frames, tubelet 2, --input_size 224 (scripts/ava/*/run.sh).
  - utils.py save_model (the scripts do not pass --enable_deepspeed, so loss_scaler is set):
    checkpoint-<epoch>.pth = {'model': model_without_ddp.state_dict() (no 'module.' prefix),
    'optimizer', 'epoch', 'scaler', 'args' (an argparse.Namespace)}, 'model_ema' only with
    --model_ema (off in every script). With DeepSpeed, save_checkpoint's own files (weights under
    'module'). utils.auto_load_model (--resume / --eval) loads checkpoint['model'] strictly.
  - MODEL_ZOO.md: AVA 2.2 fine-tuned checkpoints (Google Drive) for ViT-S and ViT-B (each with
    and without the Kinetics-400 label fine-tuning); the ViT-L and ViT-H rows link a script only,
    and README.md's Kinetics-700 ViT-L rows are not in the model zoo.
So import reads 'model' (or 'module', or a bare state dict), reads the size off the tensors and
num_classes off head.weight, and export writes {'model': state dict}.
"""
from __future__ import annotations

import json
import os
import re
import sys

import numpy as np

from internvideo_jax.convert import architecture as arch
from internvideo_jax.convert.cli_common import (abstract_variables, known_size, read_weights,
                                               save_state_dict, say_size)
from internvideo_jax.convert.common import (ConversionError, Path, Rule, UsageError,
                                           export_state_dict, flatten, identity,
                                           import_state_dict, strip_prefixes)
from internvideo_jax.convert.outputs import replacing
from internvideo_jax.convert.reading import read_hf_dir
from internvideo_jax.convert.registry import Family, register
from internvideo_jax.models import architecture, ava_head, videomae
from internvideo_jax.models.videomae import SIZES, VideoMAESize

# Wrappers seen around official checkpoints: DDP 'module.', 'model.', the fine-tuning scripts'
# 'backbone.', and torch.compile's '_orig_mod.' (VideoMAE V2's run_mae_pretraining.py compiles the
# model on torch > 1.13.1 and saves its state dict; its fine-tuning loader strips the prefix).
# Stripped only when every key carries them.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.")


def _transforms(path: Path, shape: tuple[int, ...]):
    leaf, module = path[-1], path[-2] if len(path) > 1 else ""
    if module == "patch_embed" and leaf == "kernel":  # (pt, p, p, C, D) <- [D, C, pt, p, p]
        return (lambda w: w.transpose(2, 3, 4, 1, 0), lambda k: k.transpose(4, 3, 0, 1, 2))
    if module == "qkv":  # (D, 3, heads, hd) <- [3D, D]
        return (lambda w: w.T.reshape(shape), lambda k: k.reshape(shape[0], -1).T)
    if module == "proj" and leaf == "kernel":  # (heads, hd, D) <- [D, D]
        return (lambda w: w.T.reshape(shape), lambda k: k.reshape(-1, shape[-1]).T)
    if leaf == "kernel":
        return (lambda w: w.T, lambda k: k.T)
    if leaf in ("q_bias", "v_bias"):  # (heads, hd) <- [D]
        return (lambda b: b.reshape(shape), lambda b: b.reshape(-1))
    return identity, identity


def _official_name(path: Path, encoder_prefix: str) -> str:
    names = []
    for p in path:
        if p == "transformer":
            continue
        m = re.fullmatch(r"blocks_(\d+)", p)
        names.append(f"blocks.{m.group(1)}" if m else p)
    if names[0] == "encoder":
        names = ([encoder_prefix.rstrip(".")] if encoder_prefix else []) + names[1:]
    if names[-2:] == ["patch_embed", "kernel"]:
        names[-1] = "proj.weight"
    elif names[-2:] == ["patch_embed", "bias"]:
        names[-1] = "proj.bias"
    elif names[-1] in ("kernel", "scale"):
        names[-1] = "weight"
    return ".".join(names)


def official_rules(target_params: dict) -> list[Rule]:
    """Rules for a VideoMAEPretrain (params hold 'decoder'), VideoMAEClassifier or
    VideoMAEDetector (encoder/norm -> norm, head -> head) tree.

    Pretraining checkpoints prefix the encoder with 'encoder.'; fine-tuned ones do not.
    """
    flat = flatten(target_params)
    encoder_prefix = "encoder." if any(p[0] == "decoder" for p in flat) else ""
    rules = []
    for path, value in flat.items():
        to_ours, to_torch = _transforms(path, tuple(value.shape))
        rules.append(Rule(path, _official_name(path, encoder_prefix), to_ours, to_torch))
    return rules


# ---- HF transformers <-> official ----------------------------------------------------------------
# (official name fragment, HF name fragment): one table for both directions. {enc} is 'encoder.'
# in pretraining checkpoints and '' in fine-tuned ones; {i} a layer number. Fragments starting with
# '.' match inside a key, the others at its start. Order matters: attention.output.dense before
# output.dense.
_NAME_PAIRS = [
    ("{enc}patch_embed.proj.", "videomae.embeddings.patch_embeddings.projection."),
    ("{enc}blocks.{i}.", "videomae.encoder.layer.{i}."),
    ("decoder.blocks.{i}.", "decoder.decoder_layers.{i}."),
    ("{enc}norm.", "videomae.layernorm."),
    ("head.", "classifier."),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    (".attn.proj.", ".attention.output.dense."),
    (".mlp.fc1.", ".intermediate.dense."),
    (".mlp.fc2.", ".output.dense."),
]


def _renames(to_hf: bool, enc: str) -> list[tuple[str, str]]:
    out = []
    for official, hf in _NAME_PAIRS:
        src, dst = (official, hf) if to_hf else (hf, official)
        src, dst = src.replace("{enc}", enc), dst.replace("{enc}", enc)
        pattern = re.escape(src).replace(r"\{i\}", r"(\d+)")
        out.append((("" if src.startswith(".") else "^") + pattern, dst.replace("{i}", r"\1")))
    return out


def official_to_hf(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    pretraining = any(k.startswith(("encoder.", "decoder.")) for k in state_dict)
    rules = _renames(to_hf=True, enc="encoder." if pretraining else "")
    out = {}
    for key, v in state_dict.items():
        m = re.match(r"(.*)\.attn\.(qkv\.weight|q_bias|v_bias)$", key)
        if m:
            base = _rename(m.group(1) + ".", rules) + "attention.attention."
            if m.group(2) == "qkv.weight":
                q, k, w = np.split(v, 3, axis=0)
                out.update({base + "query.weight": q, base + "key.weight": k,
                            base + "value.weight": w})
            else:
                out[base + ("query.bias" if m.group(2) == "q_bias" else "value.bias")] = v
            continue
        out[_rename(key, rules)] = v
    return out


def hf_to_official(state_dict: dict, pretraining: bool) -> dict:
    """HF VideoMAEForPreTraining / VideoMAEForVideoClassification keys -> official keys.

    Accepts both transformers >= 5 names (query.bias / value.bias) and older ones (q_bias /
    v_bias). A 'key.bias' has no official counterpart and is reported as unexpected.
    """
    rules = _renames(to_hf=False, enc="encoder." if pretraining else "")
    out, qkv = {}, {}
    for key, v in state_dict.items():
        m = re.match(r"(.*)\.attention\.attention\.(query|key|value)\.(weight|bias)$", key) or \
            re.match(r"(.*)\.attention\.attention\.(q_bias|v_bias)$", key)
        if m and not (len(m.groups()) == 3 and m.group(2) == "key" and m.group(3) == "bias"):
            base = _rename(m.group(1) + ".", rules) + "attn."
            if len(m.groups()) == 2:
                out[base + m.group(2)] = v
            elif m.group(3) == "weight":
                qkv.setdefault(base, {})[m.group(2)] = v
            else:
                out[base + ("q_bias" if m.group(2) == "query" else "v_bias")] = v
            continue
        out[_rename(key, rules)] = v
    for base, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            out.update({f"{base}{p}.weight(incomplete qkv)": parts[p] for p in parts})
            continue
        out[base + "qkv.weight"] = _concat([parts["query"], parts["key"], parts["value"]])
    return out


def _concat(parts):
    if hasattr(parts[0], "detach"):
        import torch
        return torch.cat(parts, dim=0)
    return np.concatenate(parts, axis=0)


def _rename(key: str, rules) -> str:
    for pat, rep in rules:
        key = re.sub(pat, rep, key)
    return key


# ---- Public API -------------------------------------------------------------------------------
def import_official(state_dict: dict, target_params: dict) -> dict:
    """Official VideoMAE state dict (weights under 'model'/'module' or top level) -> our params.

    target_params: our model's parameter tree (arrays or ShapeDtypeStructs) fixing the layout.
    """
    for wrapper in ("model", "module", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    state_dict = strip_prefixes(dict(state_dict), WRAPPER_PREFIXES)
    _refuse_cos_attn(state_dict)
    shapes = {p: tuple(v.shape) for p, v in flatten(target_params).items()}
    return import_state_dict(official_rules(target_params), state_dict, shapes,
                             "VideoMAE (official layout)")


def _refuse_cos_attn(state_dict: dict) -> None:
    """VideoMAE V2's cos_attn=True blocks (CosAttention: cosine-similarity attention with a
    learned per-head log scale, `attn.scale` (heads, 1, 1)) compute another function than ours;
    no released checkpoint uses them (every script leaves cos_attn False). Refused by name."""
    scales = sorted(k for k in state_dict if k.endswith(".attn.scale"))
    if scales:
        raise ConversionError(
            "VideoMAE V2 with cos_attn=True (cosine attention, a learned attn.scale per block) "
            "is not supported: our blocks are scaled dot-product attention", unexpected=scales)


def export_official(params: dict) -> dict[str, np.ndarray]:
    return export_state_dict(official_rules(params), params)


def import_hf(state_dict: dict, target_params: dict) -> dict:
    """HF transformers VideoMAEForPreTraining / VideoMAEForVideoClassification -> our params."""
    pretraining = "decoder" in target_params
    official = hf_to_official(dict(state_dict), pretraining)
    shapes = {p: tuple(v.shape) for p, v in flatten(target_params).items()}
    return import_state_dict(official_rules(target_params), official, shapes,
                             "VideoMAE (HF transformers layout)")


def export_hf(params: dict) -> dict[str, np.ndarray]:
    return official_to_hf(export_official(params))


def hf_config(size, *, num_frames: int, image_size: int, num_classes: int | None = None,
              norm_pix_loss: bool = True) -> dict:
    """An HF VideoMAEConfig dict for one of our sizes (layer_norm_eps 1e-6 as the official code;
    HF's default 1e-12 would silently change every output)."""
    cfg = dict(
        model_type="videomae", image_size=image_size, patch_size=size.patch, num_channels=3,
        num_frames=num_frames, tubelet_size=size.tubelet, hidden_size=size.dim,
        num_hidden_layers=size.depth, num_attention_heads=size.heads,
        intermediate_size=size.mlp_dim, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True,
        decoder_num_attention_heads=size.decoder_heads, decoder_hidden_size=size.decoder_dim,
        decoder_num_hidden_layers=size.decoder_depth, decoder_intermediate_size=size.decoder_mlp_dim,
        norm_pix_loss=norm_pix_loss, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if num_classes is None:
        cfg.update(use_mean_pooling=False, architectures=["VideoMAEForPreTraining"])
    else:
        cfg.update(use_mean_pooling=True, architectures=["VideoMAEForVideoClassification"],
                   id2label={str(i): f"LABEL_{i}" for i in range(num_classes)},
                   label2id={f"LABEL_{i}": i for i in range(num_classes)})
    return cfg


# ---- the converter CLI's VideoMAE family (python -m internvideo_jax.convert) -------------------
def size_from_params(params: dict):
    """Read the architecture (a VideoMAESize) off our own parameter tree (heads included: qkv is
    (D, 3, H, hd))."""
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
    if kind == "videomae_pretrain":
        return videomae.VideoMAEPretrain(size)
    if kind == "videomae_classifier":
        return videomae.VideoMAEClassifier(size, num_classes)
    if kind == "videomae_detector":
        return ava_head.VideoMAEDetector(size, num_classes)
    raise UsageError(f"unknown --model {kind!r}")


def is_detector(params: dict) -> bool:
    """One of our trees is a VideoMAEDetector's: the encoder's final norm and a head, no decoder
    (a pretraining tree) and no fc_norm (a classifier's)."""
    return ("head" in params and "norm" in params.get("encoder", {}) and "decoder" not in params
            and "fc_norm" not in params)


def videomae_variables(model, frames: int, image: int) -> dict:
    """abstract_variables of a VideoMAE model for clips of `frames` x `image`^2."""
    import jax
    import jax.numpy as jnp
    video = jax.ShapeDtypeStruct((1, frames, image, image, 3), jnp.float32)
    args = (video,)
    if hasattr(model, "mask_ratio"):
        t, h, w = frames // model.size.tubelet, image // model.size.patch, image // model.size.patch
        args += (jax.ShapeDtypeStruct((1, t * h * w), jnp.bool_),)
    if isinstance(model, ava_head.VideoMAEDetector):  # one person box
        args += (jax.ShapeDtypeStruct((1, 1, 4), jnp.float32),)
    return abstract_variables(model, *args)


def target_params(model, frames: int, image: int) -> dict:
    import flax.linen as nn
    return nn.meta.unbox(videomae_variables(model, frames, image))["params"]


def import_videomae(a) -> tuple[dict, dict, dict]:
    """An official VideoMAE / InternVideo-MAE / VideoMAE V2 file or an HF transformers directory
    -> our params; the size read off the tensors (or config.json)."""
    import flax.linen as nn
    pretraining = a.model == "videomae_pretrain"
    detector = a.model == "videomae_detector"
    if detector and os.path.isdir(a.src):
        raise UsageError("--model videomae_detector imports the official AVA .pth "
                         "(MCG-NJU/VideoMAE-Action-Detection); HF transformers has no VideoMAE "
                         "detection model, so there is no HF directory to read")
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
        convert = import_hf
    else:
        sd = strip_prefixes(read_weights(a), WRAPPER_PREFIXES)
        if detector:
            _check_detector_keys(sd)
        size, name = arch.videomae_size(sd, pretraining, SIZES.get(a.size))
        num_classes = a.num_classes or (sd["head.weight"].shape[0] if "head.weight" in sd else 0)
        convert = import_official
    if a.size:
        chosen = known_size(lambda n: SIZES[n], a.size, sorted(SIZES))
        if not pretraining:
            chosen, size = arch.videomae_encoder_only(chosen), arch.videomae_encoder_only(size)
        arch.check_against(size, chosen, a.size, {n: arch.videomae_encoder_only(s) if not
                                                  pretraining else s for n, s in SIZES.items()},
                           "VideoMAE")
    say_size("VideoMAE AVA detector" if detector else "VideoMAE", name,
             f"width {size.dim}, {size.depth} layers, {size.heads} heads, patch "
             f"{size.patch}, tubelet {size.tubelet}, MLP {size.mlp_dim}" + (
                 f"; decoder width {size.decoder_dim}, {size.decoder_depth} layers"
                 if pretraining else f"; {num_classes} classes"), a.size or os.path.isdir(a.src))
    model = build_model(a.model, size, num_classes)
    boxed = videomae_variables(model, a.frames, a.image_size)
    description = architecture.describe(a.model, size, name, num_classes=num_classes)
    return convert(sd, nn.meta.unbox(boxed)["params"]), boxed, description


def _check_detector_keys(sd: dict) -> None:
    """Refuse, by name, a state dict that is not an AVA detector's before any size is read: a
    pretraining file ('encoder.' keys) or a classifier (fc_norm, no norm). The strict import
    would list the same keys; this says what the file is instead."""
    if "patch_embed.proj.weight" not in sd:
        hint = (" (an 'encoder.'-prefixed pretraining checkpoint: --model videomae_pretrain)"
                if "encoder.patch_embed.proj.weight" in sd else "")
        raise ConversionError("not a VideoMAE AVA detector state dict" + hint,
                              missing=["patch_embed.proj.weight"])
    if "fc_norm.weight" in sd and "norm.weight" not in sd:
        raise ConversionError(
            "VideoMAE AVA detector: this is a fine-tuned classifier (fc_norm, no norm): "
            "--model videomae_classifier", missing=["norm.weight", "norm.bias"],
            unexpected=sorted(k for k in sd if k.startswith("fc_norm.")))


def export_videomae(variables: dict, meta: dict, a) -> None:
    """Our VideoMAE params -> the official .pth ({'model': state dict}, float32) with --to pth,
    or an HF transformers directory (model.safetensors + config.json) with --to hf (not for the
    AVA detector: HF transformers has no such model)."""
    params = variables["params"]
    size = size_from_params(params)
    if a.to != "pth" and is_detector(params):
        raise UsageError("a VideoMAE AVA detector exports with --to pth only (the official "
                         "MCG-NJU/VideoMAE-Action-Detection layout); HF transformers has no "
                         "VideoMAE detection model")
    if a.to == "pth":
        n = save_state_dict(export_official(params), "model", a.out, a.overwrite)
        print(f"wrote {n} tensors (official layout, float32) to {a.out}")
        return
    from safetensors.numpy import save_file
    data = meta.get("config", {}).get("data", {})
    frames, image = data.get("num_frames", a.frames), data.get("crop_size", a.image_size)
    num_classes = params["head"]["kernel"].shape[1] if "head" in params else None
    with replacing(a.out, a.overwrite) as staging:
        os.makedirs(staging)
        save_file(export_hf(params), os.path.join(staging, "model.safetensors"))
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump(hf_config(size, num_frames=frames, image_size=image,
                                num_classes=num_classes), f, indent=1)
    print(f"wrote an HF transformers directory to {a.out} ({frames} frames, {image}px)")


register(Family(label="VideoMAE", models=("videomae_pretrain", "videomae_classifier",
                                         "videomae_detector"),
                import_fn=import_videomae, exports=lambda params: "encoder" in params,
                export_fn=export_videomae, formats=("hf", "pth"),
                sizes="tiny, S, B, L, H, H_internvideo, g"))
