"""InternVideo multimodal checkpoints (Lightning: 'clip.*' + 'caption_decoder.*') <-> our
VideoTextModel, checked against the independent PyTorch modules with the official keys
(internvideo_jax/torch_models/multimodal.py): video features, text features and caption logits
agree; the round trip is bit-exact; every strictness failure is named."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from internvideo_jax.convert import common  # noqa: E402
from internvideo_jax.convert import multimodal as conv  # noqa: E402
from internvideo_jax.models import caption_decoder, clip, multimodal  # noqa: E402
from internvideo_jax.models import uniformerv2 as u  # noqa: E402
from internvideo_jax.torch_models.multimodal import InternVideoMultimodal  # noqa: E402

VIDEO = u.UniFormerV2Size(width=24, layers=3, heads=4, patch=8, image_size=32, embed_dim=64,
                          return_list=(1, 2))
SIZE = multimodal.MultimodalSize(VIDEO, clip.TEXT_SIZES["tiny"],
                                 caption_decoder.DECODER_SIZES["tiny"])
CLIP_KWARGS = dict(image_size=32, patch=8, width=24, layers=3, heads=4, return_list=[1, 2],
                   embed_dim=64, text_width=64, text_layers=2, text_heads=4)


def _ours(caption=True):
    model = multimodal.VideoTextModel(SIZE, caption=caption)
    params = jax.device_get(nn.meta.unbox(model.init(
        jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)), jnp.zeros((1, 77), jnp.int32))))["params"]
    return model, params


def _reference():
    """The PyTorch model with random weights everywhere (the zero-initialised parts too)."""
    torch.manual_seed(0)
    ref = InternVideoMultimodal(CLIP_KWARGS, decoder_layers=2, decoder_heads=4,
                                num_visual_queries=16)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            is_norm_weight = name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight", "gamma",
                                            "norm.weight", "ln_final.weight", "ln_pre.weight"))
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5) + float(is_norm_weight))
    return ref.eval()


def _ids():
    ids = np.zeros((2, 77), np.int64)
    ids[0, :5] = [49406, 320, 1125, 530, 49407]
    ids[1, :7] = [49406, 518, 2368, 320, 4558, 1125, 49407]
    return ids


def test_reference_model_imports_matches_and_round_trips():
    ref = _reference()
    checkpoint = {k: v.numpy() for k, v in ref.state_dict().items()}
    model, params = _ours()
    imported = conv.import_internvideo({"state_dict": checkpoint, "epoch": 1}, params)

    rng = np.random.default_rng(1)
    video = rng.normal(size=(2, 3, 8, 32, 32)).astype(np.float32)  # NCTHW
    ids = _ids()
    with torch.no_grad():
        want = [t.numpy() for t in ref(torch.from_numpy(video), torch.from_numpy(ids),
                                       caption_length=12)]
    got = model.apply({"params": imported}, jnp.asarray(video.transpose(0, 2, 3, 4, 1)),
                      jnp.asarray(ids, jnp.int32), caption_length=12)
    for name, w in zip(("video", "text", "caption_logits"), want):
        g = np.asarray(got[name])
        assert g.shape == w.shape, name
        rel = np.abs(g - w).max() / np.abs(w).max()
        assert rel < 1e-5, (name, rel)
        assert np.abs(w).max() > 0.1, name

    back = conv.export_internvideo(imported)
    assert back.keys() == checkpoint.keys()
    for k, v in checkpoint.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)


def test_reference_only_parts_are_refused_with_a_hint_unless_dropped_by_name(capsys):
    _, params = _ours(caption=False)
    checkpoint = conv.export_internvideo(params)
    checkpoint["clip.text_mask_embedding"] = np.ones((1, 1, 64), np.float32)
    checkpoint["caption_decoder.visual_queries"] = np.ones((16, 64), np.float32)
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo({"state_dict": checkpoint}, params)
    assert e.value.unexpected == ["caption_decoder.visual_queries", "clip.text_mask_embedding"]
    assert "masked-language-modelling" in str(e.value) and "caption_weight" in str(e.value)
    imported = conv.import_internvideo(
        {"state_dict": checkpoint}, params,
        drop_prefixes=("caption_decoder.", "clip.text_mask_embedding"))
    assert "clip.text_mask_embedding" in capsys.readouterr().out
    np.testing.assert_array_equal(imported["logit_scale"], params["logit_scale"])
    del checkpoint["clip.visual.transformer.dec.1.ln_3.bias"]
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo(checkpoint, params, drop_prefixes=("caption_decoder.",
                                                                   "clip.text_mask_embedding"))
    assert e.value.missing == ["clip.visual.transformer.dec.1.ln_3.bias"]


def test_decoder_strictness_names_the_key():
    _, params = _ours()
    good = conv.export_internvideo(params)
    key = "caption_decoder.multimodal_layers.1.0.fn.fused_attn_ff_proj.weight"
    assert good[key].shape == (64 + 2 * 16 + 2 * 256, 64)
    for change, kind, name in [
            (lambda sd: sd.__setitem__(key, sd[key][:-2]), "mismatched", key),
            (lambda sd: sd.pop("caption_decoder.predictor.4.bias"), "missing",
             "caption_decoder.predictor.4.bias"),
            (lambda sd: sd.__setitem__("caption_decoder.visual_attn_pooler.norm.beta",
                                       np.full(64, 0.1, np.float32)), "unexpected",
             "caption_decoder.visual_attn_pooler.norm.beta"),
            (lambda sd: sd.__setitem__("caption_decoder.multimodal_layers.0.0.fn.rotary_emb."
                                       "inv_freq", np.ones(8, np.float32)), "unexpected",
             "caption_decoder.multimodal_layers.0.0.fn.rotary_emb.inv_freq")]:
        sd = dict(good)
        change(sd)
        with pytest.raises(common.ConversionError) as e:
            conv.import_internvideo(sd, params)
        listed = {"mismatched": [m[0] for m in e.value.mismatched], "missing": e.value.missing,
                  "unexpected": e.value.unexpected}[kind]
        assert len(listed) == 1 and listed[0].startswith(name), (kind, listed)


def test_import_and_export_commands(tmp_path, monkeypatch):
    """CLI: a Lightning file -> orbax params (decoder built because the file has one) -> the
    same state dict back."""
    from internvideo_jax.training.checkpointing import load_params
    from internvideo_jax.convert.__main__ import main
    monkeypatch.setitem(multimodal.SIZES, "test", SIZE)
    _, params = _ours()
    checkpoint = conv.export_internvideo(params)
    checkpoint["clip.text_mask_embedding"] = np.zeros((1, 1, 64), np.float32)
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in checkpoint.items()},
                "epoch": 3}, tmp_path / "mm.ckpt")
    main(["import", "--src", str(tmp_path / "mm.ckpt"), "--model", "internvideo_multimodal",
          "--size", "test", "--frames", "8", "--drop-prefix", "clip.text_mask_embedding",
          "--out", str(tmp_path / "ours")])
    got, _ = load_params(str(tmp_path / "ours"))
    assert "decoder" in got
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    main(["export", "--src", str(tmp_path / "ours"), "--to", "pth", "--out",
          str(tmp_path / "back.ckpt")])
    back = torch.load(tmp_path / "back.ckpt")["state_dict"]
    del checkpoint["clip.text_mask_embedding"]
    assert back.keys() == checkpoint.keys()
    with pytest.raises(SystemExit, match=r"--size B/16 is not the InternVideo multimodal this "
                                         r"checkpoint holds: video UniFormerV2Size\(width=24, .*"
                                         r"in the checkpoint, UniFormerV2Size\(width=768, .*"
                                         r"use --size test"):
        main(["import", "--src", str(tmp_path / "mm.ckpt"), "--model", "internvideo_multimodal",
              "--size", "B/16", "--out", str(tmp_path / "wrong")])
    for k, v in checkpoint.items():
        np.testing.assert_array_equal(back[k].numpy(), v, err_msg=k)
