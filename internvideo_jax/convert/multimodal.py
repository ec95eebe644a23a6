"""InternVideo multimodal checkpoints (video tower, CLIP text tower, caption decoder) <-> our
VideoTextModel, and the downstream video QA checkpoints <-> our VideoQAModel.

The released multimodal checkpoints are Lightning files: {'state_dict': {...}} with the CLIP model
under 'clip.' and the caption decoder beside it under 'caption_decoder.' (spec.md section 3; the
reference's `clip_vit_only_global` video tower and CoTrain CaptionDecoder):
  clip.visual.conv1.weight [W, 3, k, p, p], clip.visual.{class_embedding, positional_embedding,
  ln_pre}, clip.visual.transformer.resblocks.i.*, clip.visual.transformer.{temporal_cls_token,
  dpe.j, dec.j.*, balance}          <- our visual/encoder/*: the UniFormerV2 backbone's names with
                                       'backbone.' read as 'visual.' (no classifier head)
  clip.visual_ln_post.{weight, bias}, clip.visual_proj [W, E]  <- visual/visual_ln_post, visual_proj
  clip.token_embedding.weight, clip.positional_embedding, clip.transformer.resblocks.i.*,
  clip.ln_final, clip.text_projection  <- textual/* (OpenAI CLIP names, convert/clip.py)
  clip.logit_scale                  <- logit_scale
  caption_decoder.*                 <- decoder/* (convert/caption_decoder.py)
The video QA checkpoints of the downstream code (CoTrain clip_module.py, clip_qa_type 'vtc_cap';
released for InternVideo-MM-L-14 on MSR-VTT, MSVD and TGIF-QA; models/video_qa.py) hold the same
less clip.visual_proj, clip.text_projection and caption_decoder.predictor.*, plus the head:
  vqa_classifier.1.{weight, bias} [2hs, hs]  <- vqa_classifier/fc (kernel transposed)
  vqa_classifier.2.{weight, bias} [2hs]      <- vqa_classifier/norm/{scale, bias}
  vqa_classifier.5.{weight, bias} [V, 2hs]   <- vqa_classifier/out; V, the answers, read off it
(`--model internvideo_qa`; the tables are built from our tree, so one code path serves both).
A bare state dict without the 'clip.' prefix is read as the CLIP part. Parts of the reference's
training module that our model does not have (clip.text_mask_embedding for masked language
modelling, the momentum encoder clip_k.*, text_decoder.*, visual_decoder.*, ...) are refused
unless named with --drop-prefix (then printed, never silent).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from internvideo_jax.convert import architecture as arch
from internvideo_jax.convert import caption_decoder as conv_dec
from internvideo_jax.convert import clip as conv_clip
from internvideo_jax.convert import uniformerv2 as conv_uni
from internvideo_jax.convert.cli_common import (abstract_variables, known_size, read_weights,
                                               save_state_dict, say_size)
from internvideo_jax.convert.common import (CLIP_LEAF_NAMES, ConversionError, Path, Rule,
                                           export_state_dict, flatten, identity,
                                           import_state_dict, linear_to_ours, strip_prefixes)
from internvideo_jax.convert.registry import Family, register
from internvideo_jax.models import architecture, multimodal, video_qa

WRAPPER_PREFIXES = ("module.", "model.")
DECODER = "caption_decoder."
HEAD = "vqa_classifier."
QA_MODEL = "internvideo_qa"
_HEAD_LAYERS = {"fc": "1", "norm": "2", "out": "5"}  # ours -> the reference's nn.Sequential index
# reference training-module parts we do not build, and what they are (for the refusal's hint)
REFERENCE_ONLY = {"clip.text_mask_embedding": "the masked-language-modelling token",
                  "clip_k.": "the momentum encoder", "text_decoder.": "the MLM head",
                  "visual_decoder.": "the masked-video head",
                  "rank_output.": "the multiple-choice ranking head"}


def _clip_name(path: Path, value) -> tuple[str, tuple]:
    shape = tuple(value.shape)
    if path[:2] == ("visual", "encoder"):
        backbone = ("params", "backbone") + path[2:]
        name = "visual." + conv_uni._official_name(backbone)[len("backbone."):]
        return name, conv_uni._transforms(backbone, shape)
    if path[:2] == ("visual", "visual_ln_post"):
        return f"visual_ln_post.{CLIP_LEAF_NAMES.get(path[-1], path[-1])}", (identity, identity)
    if path in (("visual", "visual_proj"), ("logit_scale",)):
        return path[-1], (identity, identity)
    if path[0] == "textual":
        text, = conv_clip.text_rules({path[1:][0]: _nest(path[2:], value)})
        return text.key, (text.to_ours, text.to_torch)
    raise ValueError(f"no official name for {'/'.join(path)}")


def _nest(path: Path, value):
    """A one-leaf nested dict {'a': {'b': value}} for a path ('a', 'b')."""
    for name in reversed(path):
        value = {name: value}
    return value


def _head_rules(head: dict) -> list[Rule]:
    """vqa_classifier/{fc, norm, out}/leaf -> vqa_classifier.{1, 2, 5}.{weight, bias}."""
    out = []
    for (layer, leaf), _ in flatten(head).items():
        key = f"{HEAD}{_HEAD_LAYERS[layer]}.{'bias' if leaf == 'bias' else 'weight'}"
        to_ours, to_torch = (linear_to_ours, linear_to_ours) if leaf == "kernel" else \
            (identity, identity)
        out.append(Rule(("vqa_classifier", layer, leaf), key, to_ours, to_torch))
    return out


def rules(params: dict) -> list[Rule]:
    """Rules for a VideoTextModel parameter tree (with or without the caption decoder) or a
    VideoQAModel's (no visual_proj, text_projection, decoder predictor; a vqa_classifier)."""
    out = []
    for path, value in flatten({k: v for k, v in params.items()
                                if k not in ("decoder", "vqa_classifier")}).items():
        name, (to_ours, to_torch) = _clip_name(path, value)
        out.append(Rule(path, "clip." + name, to_ours, to_torch))
    if "decoder" in params:
        out += conv_dec.rules(params["decoder"], DECODER)
    if "vqa_classifier" in params:
        out += _head_rules(params["vqa_classifier"])
    return out


def unwrap(checkpoint: dict) -> dict:
    """A Lightning file ({'state_dict': ...}) or a raw state dict -> keys as in the Lightning
    module ('clip.*', 'caption_decoder.*', ...)."""
    state_dict = strip_prefixes(dict(checkpoint.get("state_dict", checkpoint)), WRAPPER_PREFIXES)
    if not any(k.startswith("clip.") for k in state_dict):  # a bare CLIP-part state dict
        state_dict = {k if k.startswith(DECODER) else "clip." + k: v
                      for k, v in state_dict.items()}
    return state_dict


def import_internvideo(checkpoint: dict, target_params: dict,
                       drop_prefixes: tuple[str, ...] = ()) -> dict:
    """An InternVideo multimodal checkpoint -> our VideoTextModel params (or a video QA one ->
    VideoQAModel params: `target_params` decides), strictly. Keys under `drop_prefixes` (full
    keys, e.g. 'clip.text_mask_embedding') are left out and listed."""
    state_dict = unwrap(checkpoint)
    dropped = sorted(k for k in state_dict if drop_prefixes and k.startswith(tuple(drop_prefixes)))
    if dropped:
        print(f"left out as asked ({len(dropped)} tensors under {list(drop_prefixes)}): "
              f"{dropped[:10]}{'...' if len(dropped) > 10 else ''}")
        state_dict = {k: v for k, v in state_dict.items() if k not in set(dropped)}
    if "decoder" in target_params:
        state_dict = conv_dec.split_fused(state_dict, target_params["decoder"], DECODER)
    shapes = {p: tuple(v.shape) for p, v in flatten(target_params).items()}
    try:
        return import_state_dict(rules(target_params), state_dict, shapes,
                                 "InternVideo multimodal (clip.*, caption_decoder.*)")
    except ConversionError as e:
        hints = sorted({f"{prefix} ({what})" for k in e.unexpected
                        for prefix, what in REFERENCE_ONLY.items() if k.startswith(prefix)})
        if "decoder" not in target_params and any(k.startswith(DECODER) for k in e.unexpected):
            hints.append(f"{DECODER} (the caption decoder: import with model.caption_weight > 0 "
                         f"to keep it)")
        if "vqa_classifier" not in target_params and any(k.startswith(HEAD)
                                                         for k in e.unexpected):
            hints.append(f"{HEAD} (the open-ended video QA head: import the file with --model "
                         f"{QA_MODEL})")
        if hints:
            e.args = (e.args[0] + "\nthe reference's training module has parts our model does "
                      "not build: " + "; ".join(hints) + ". Leave them out knowingly with "
                      "--drop-prefix <prefix>.",)
        raise


def export_internvideo(params: dict) -> dict[str, np.ndarray]:
    """Our VideoTextModel or VideoQAModel params -> the Lightning state dict ('clip.*',
    'caption_decoder.*' with the reference's buffers, 'vqa_classifier.*'), float32."""
    state_dict = export_state_dict(rules(params), params)
    if "decoder" in params:
        state_dict = conv_dec.join_fused(state_dict, params["decoder"], DECODER)
    return state_dict


# ---- the converter CLI's multimodal family (python -m internvideo_jax.convert) -----------------
def import_multimodal(a) -> tuple[dict, dict, dict]:
    """An InternVideo multimodal Lightning checkpoint ('clip.*' and 'caption_decoder.*' keys) ->
    VideoTextModel params; the caption decoder is built when the file has one (and it is not
    left out with --drop-prefix caption_decoder.). With --model internvideo_qa, a video QA
    checkpoint -> VideoQAModel params, the answers read off vqa_classifier.5.weight (--num-classes,
    given, is imported strictly against it). Returns (params, boxed abstract variables, the
    description)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    qa = a.model == QA_MODEL
    checkpoint = read_weights(a)
    keys = unwrap(checkpoint)
    chosen = known_size(multimodal.get_size, a.size) if a.size else None
    size, name, _ = arch.multimodal_size(keys, chosen)
    caption = any(k.startswith(DECODER) and not k.startswith(tuple(a.drop_prefix))
                  for k in keys)
    if qa:
        answers = keys.get(f"{HEAD}5.weight")
        if answers is None or not caption:
            raise ConversionError(
                "InternVideo video QA (vtc_cap): not a QA checkpoint (a pretraining one imports "
                "with --model internvideo_multimodal; the QA model loads it by path)",
                missing=[f"{HEAD}5.weight"] if answers is None else [f"{DECODER}*"])
        num_answers = a.num_classes or int(answers.shape[0])
    if chosen:
        if not caption:  # the decoder is not in the file (or left out): not compared
            chosen = dataclasses.replace(chosen, decoder=size.decoder)
        if qa:  # no projections in the file: the embedding size is not compared
            chosen = dataclasses.replace(
                chosen, video=dataclasses.replace(chosen.video, embed_dim=size.video.embed_dim),
                text=dataclasses.replace(chosen.text, embed_dim=size.text.embed_dim))
        arch.check_against(size, chosen, a.size, multimodal.SIZES, "InternVideo multimodal")
    v, t = size.video, size.text
    say_size("InternVideo video QA" if qa else "InternVideo multimodal", name,
             f"video width {v.width}, {v.layers} layers, patch {v.patch}, {v.image_size}px, "
             f"{len(v.return_list)} global UniBlocks; text width {t.width}, {t.layers} layers"
             + (f"; {num_answers} answers" if qa else f"; embedding {v.embed_dim}"), a.size)
    video = jax.ShapeDtypeStruct((1, a.frames, v.image_size, v.image_size, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, t.context_length), jnp.int32)
    if qa:
        boxed = abstract_variables(video_qa.VideoQAModel(size, num_answers), video, ids)
        print(f"video QA: video tower, text tower, caption decoder ({size.decoder.layers} "
              f"layers, no predictor), vqa_classifier ({num_answers} answers)")
        description = architecture.describe(QA_MODEL, size, name, caption=True,
                                            num_answers=num_answers)
    else:
        boxed = abstract_variables(multimodal.VideoTextModel(size, caption=caption), video, ids)
        print("multimodal: video tower, text tower"
              + (f", caption decoder ({size.decoder.layers} layers)" if caption else
                 " (no caption decoder in the file: train with model.caption_weight=0)"))
        description = architecture.describe("internvideo_multimodal", size, name,
                                            caption=caption)
    return import_internvideo(checkpoint, nn.meta.unbox(boxed)["params"],
                              tuple(a.drop_prefix)), boxed, description


def export_multimodal(variables: dict, meta: dict, a) -> None:
    """Our VideoTextModel or VideoQAModel params -> a Lightning file ({'state_dict': ...},
    float32)."""
    n = save_state_dict(export_internvideo(variables["params"]), "state_dict", a.out, a.overwrite)
    layout = "'clip.'/'caption_decoder.'" + ("/'vqa_classifier.'"
                                             if "vqa_classifier" in variables["params"] else "")
    print(f"wrote {n} tensors (InternVideo {layout} layout, float32) to {a.out}")


register(Family(label="multimodal", models=("internvideo_multimodal", QA_MODEL),
                import_fn=import_multimodal, exports=lambda params: "textual" in params,
                export_fn=export_multimodal, formats=("pth",),
                format_error="a multimodal model exports with --to pth only (the InternVideo "
                             "Lightning layout).",
                sizes="tiny, B/16, L/14, L/14@336"))
