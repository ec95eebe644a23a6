"""The architecture a released state dict holds, read off its tensors (so `convert import` needs
no --size), and checked against a --size when one is given.

What the tensors cannot say comes by rule, printed with the result:
- attention heads: the named size's with the same width, else width // 64 (CLIP's and ViT's rule;
  the exceptions, VideoMAE ViT-H (1280, 16 heads) and ViT-g (1408, 16), are named sizes);
- UniFormerV2's global UniBlocks follow the *last* backbone layers (every released config: B/16
  8-11, or 4-11 for Something-Something; L/14 20-23, or 8-23), one per `dec.j` block.
Each reader takes keys as the family's converter sees them (after its wrapper prefixes are off).
"""
from __future__ import annotations

import dataclasses
import re

from internvideo_jax.convert.common import ConversionError, UsageError
from internvideo_jax.models import caption_decoder, clip, multimodal, uniformerv2, videomae
from internvideo_jax.models.architecture import name_of


def count_indexed(keys, prefix: str) -> int:
    """How many blocks `prefix{i}.` the keys hold (the largest i + 1; gaps are the strict
    import's business)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def heads_by_rule(width: int, named: list[tuple[int, int]], given=None) -> int:
    """The heads of `given` (the --size's (width, heads)) or else of a named size with this width
    ((width, heads) pairs), else width // 64."""
    for w, heads in ([given] if given else []) + named:
        if w == width:
            return heads
    if width % 64 and given:  # the size's own: the check against it names the wrong width
        return given[1]
    if width % 64:
        raise UsageError(f"width {width} is no multiple of 64, so the number of attention heads "
                         f"cannot be inferred (the tensors do not hold it): give --size")
    return width // 64


def _headless(size):
    """`size` with every heads field zeroed (the tensors do not hold heads: a size is named by
    the rest)."""
    changes = {}
    for f in dataclasses.fields(size):
        value = getattr(size, f.name)
        if "heads" in f.name:
            changes[f.name] = 0
        elif dataclasses.is_dataclass(value):
            changes[f.name] = _headless(value)
    return dataclasses.replace(size, **changes)


def check_against(found, chosen, name: str, named: dict, what: str) -> None:
    """--size `name` (the `chosen` size) must be the size the tensors hold (`found`)."""
    if found == chosen:
        return
    diff = {f.name: (getattr(found, f.name), getattr(chosen, f.name))
            for f in dataclasses.fields(found) if getattr(found, f.name) != getattr(chosen, f.name)}
    match = next((n for n, s in named.items() if _headless(s) == _headless(found)), None)
    raise UsageError(
        f"--size {name} is not the {what} this checkpoint holds: "
        + ", ".join(f"{k} {a} in the checkpoint, {b} in --size {name}"
                    for k, (a, b) in diff.items())
        + (f"; use --size {match}, or leave --size out (it is read off the tensors)" if match
           else "; leave --size out: the size is read off the tensors"))


# ---- VideoMAE (official layout: patch_embed, blocks.i, [encoder., decoder.] for pretraining) ----
def videomae_size(sd: dict, pretraining: bool, given=None):
    """(VideoMAESize, name or None) of an official VideoMAE / InternVideo-MAE / VideoMAE V2 state
    dict; the heads from `given` (the --size's VideoMAESize) when there is one."""
    pre = "encoder." if pretraining else ""
    key = f"{pre}patch_embed.proj.weight"
    if key not in sd:
        raise ConversionError("not a VideoMAE " + ("pretraining" if pretraining else "classifier")
                              + " state dict", missing=[key])
    dim, _, tubelet, patch, _ = tuple(sd[key].shape)
    depth = count_indexed(sd, f"{pre}blocks.")
    fc1 = sd.get(f"{pre}blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / dim if fc1 is not None else 4.0
    named_heads = [(s.dim, s.heads) for s in videomae.SIZES.values()]
    dec = dict(decoder_dim=0, decoder_heads=0, decoder_depth=0)
    if pretraining and "mask_token" in sd:
        ddim = int(sd["mask_token"].shape[-1])
        dec = dict(decoder_dim=ddim, decoder_depth=count_indexed(sd, "decoder.blocks."),
                   decoder_heads=heads_by_rule(
                       ddim, [(s.decoder_dim, s.decoder_heads) for s in videomae.SIZES.values()],
                       (given.decoder_dim, given.decoder_heads) if given else None))
    given_heads = (given.dim, given.heads) if given else None
    found = videomae.VideoMAESize(dim=dim, depth=depth,
                                  heads=heads_by_rule(dim, named_heads, given_heads),
                                  mlp_ratio=mlp_ratio, patch=patch, tubelet=tubelet, **dec)
    if not pretraining:  # a classifier has no decoder: name it by its encoder
        for name, s in videomae.SIZES.items():
            if dataclasses.replace(s, decoder_dim=0, decoder_heads=0, decoder_depth=0) == found:
                return s, name
    return found, name_of(found, videomae.SIZES)


def videomae_encoder_only(size):
    """The size without its decoder (what a classifier is compared on)."""
    return dataclasses.replace(size, decoder_dim=0, decoder_heads=0, decoder_depth=0)


# ---- UniFormerV2 (official: backbone.conv1, backbone.transformer.{resblocks, dpe, dec, proj}) ----
@dataclasses.dataclass(frozen=True)
class UniFormerV2Checkpoint:
    """What an official UniFormerV2 classifier state dict holds besides its size."""

    size: object  # models.uniformerv2.UniFormerV2Size
    name: str | None  # the named size, if it is one
    temporal_kernel: int  # conv1's (3 with the temporal downsample, stride 2)
    temporal_stride: int
    local: bool  # local UniBlocks (lmhra1/lmhra2, Something-Something)
    frozen: bool  # the frozen-backbone variant: no `balance`, classes from the query token only
    num_classes: int  # 0: no head (a tower)


def uniformerv2_size(sd: dict, prefix: str = "backbone.", embed_dim: int = 0, heads=None):
    """(UniFormerV2Size, name or None, conv1's temporal kernel) of the CLIP ViT + global
    UniBlocks under `prefix` ('backbone.' in a classifier, 'clip.visual.' in the multimodal
    model); `heads`: a --size's (width, heads), used when the width is its."""
    conv1 = sd.get(f"{prefix}conv1.weight")
    if conv1 is None:
        raise ConversionError("not a UniFormerV2 state dict", missing=[f"{prefix}conv1.weight"])
    width, _, kt, patch, _ = tuple(conv1.shape)
    layers = count_indexed(sd, f"{prefix}transformer.resblocks.")
    n_global = count_indexed(sd, f"{prefix}transformer.dec.")
    pos = sd.get(f"{prefix}positional_embedding")
    grid = round((pos.shape[0] - 1) ** 0.5) if pos is not None else 224 // patch
    heads = heads_by_rule(width, [(s.width, s.heads) for s in uniformerv2.SIZES.values()], heads)
    base = dict(width=width, layers=layers, heads=heads, patch=patch, image_size=grid * patch,
                return_list=tuple(range(layers - n_global, layers)))
    same = [s for s in uniformerv2.SIZES.values()
            if {k: getattr(s, k) for k in base if k != "return_list"} == {
                k: v for k, v in base.items() if k != "return_list"}]
    size = uniformerv2.UniFormerV2Size(
        **base, embed_dim=embed_dim or (same[0].embed_dim if same else width))
    return size, name_of(size, uniformerv2.SIZES), int(kt)


def uniformerv2_checkpoint(sd: dict, heads=None) -> UniFormerV2Checkpoint:
    size, name, kt = uniformerv2_size(sd, heads=heads)
    head = sd.get("backbone.transformer.proj.2.weight")
    return UniFormerV2Checkpoint(
        size, name, kt, 2 if kt == 3 else 1, local=any(".lmhra1." in k for k in sd),
        frozen="backbone.transformer.balance" not in sd,
        num_classes=int(head.shape[0]) if head is not None else 0)


# ---- InternVideo multimodal (Lightning: clip.visual.*, clip.transformer.*, caption_decoder.*) ---
def multimodal_size(sd: dict, given=None):
    """(MultimodalSize, name or None, has a caption decoder) of a Lightning-layout state dict;
    the heads from `given` (the --size's MultimodalSize) when there is one."""
    proj = sd.get("clip.visual_proj")
    embed_dim = int(proj.shape[1]) if proj is not None else 0
    video, _, _ = uniformerv2_size(sd, "clip.visual.", embed_dim,
                                   (given.video.width, given.video.heads) if given else None)
    tok = sd.get("clip.token_embedding.weight")
    if tok is None:
        raise ConversionError("not an InternVideo multimodal state dict (no text tower)",
                              missing=["clip.token_embedding.weight"])
    vocab, text_width = (int(n) for n in tok.shape)
    text_pos = sd.get("clip.positional_embedding")
    text_heads = heads_by_rule(text_width, [(s.width, s.heads) for s in clip.TEXT_SIZES.values()],
                               (given.text.width, given.text.heads) if given else None)
    text = clip.TextSize(width=text_width, layers=count_indexed(sd, "clip.transformer.resblocks."),
                         heads=text_heads, embed_dim=embed_dim or text_width,
                         context_length=int(text_pos.shape[0]) if text_pos is not None else 77,
                         vocab_size=vocab)
    dec = "caption_decoder."
    n_dec = count_indexed(sd, f"{dec}multimodal_layers.")
    queries = sd.get(f"{dec}visual_queries")
    decoder = caption_decoder.CaptionDecoderSize(
        layers=n_dec,  # the reference: heads = width // 64, as the text's
        heads=given.decoder.heads if given and given.text.width == text_width else text_heads,
        num_queries=int(queries.shape[0]) if queries is not None else 256, vocab_size=vocab)
    if not n_dec:  # no decoder in the file: the named size's, unused
        named = [s.decoder for s in multimodal.SIZES.values() if s.text == text]
        decoder = named[0] if named else dataclasses.replace(decoder, layers=4)
    size = multimodal.MultimodalSize(video, text, decoder)
    if not n_dec:
        name = next((n for n, s in multimodal.SIZES.items() if (s.video, s.text) == (video, text)),
                    None)
    else:
        name = name_of(size, multimodal.SIZES)
    return size, name, bool(n_dec)
