"""InternVideo multimodal checkpoints ('clip.'-prefixed Lightning files) -> our VideoTextModel:
the video tower checked against the independent PyTorch UniFormerV2 (official names), the round
trip bit-exact, decoder tensors refused unless dropped by name."""
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
from internvideo_jax.torch_models.uniformerv2 import UniFormerV2  # noqa: E402

VIDEO = u.UniFormerV2Size(width=24, layers=3, heads=4, patch=8, image_size=32, embed_dim=64,
                          return_list=(1, 2))
SIZE = multimodal.MultimodalSize(VIDEO, clip.TEXT_SIZES["tiny"],
                                 caption_decoder.DECODER_SIZES["tiny"])


def _ours():
    model = multimodal.VideoTextModel(SIZE, caption=False)
    params = jax.device_get(nn.meta.unbox(model.init(
        jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)), jnp.zeros((1, 77), jnp.int32))))["params"]
    return model, params


def test_video_tower_matches_the_pytorch_uniformerv2_and_round_trips():
    torch.manual_seed(0)
    ref = UniFormerV2(image_size=32, patch=8, width=24, layers=3, heads=4, return_list=[1, 2],
                      local=False, temporal_kernel=1, temporal_stride=1, num_classes=5)
    with torch.no_grad():  # random everywhere, the zero-initialised parts too
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5)
                    + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight")) else 0))
    ref.backbone.transformer.proj = torch.nn.Identity()  # -> the fused feature
    model, params = _ours()
    checkpoint = conv.export_internvideo(params)  # text tower, logit_scale, ln_post, proj
    for k, v in ref.state_dict().items():  # the video tower from the PyTorch model
        checkpoint["clip." + k.replace("backbone.", "visual.", 1)] = v.numpy()
    rng = np.random.default_rng(1)
    for k in ("clip.visual_ln_post.weight", "clip.visual_ln_post.bias", "clip.visual_proj"):
        checkpoint[k] = rng.normal(size=checkpoint[k].shape).astype(np.float32)
    imported = conv.import_internvideo({"state_dict": checkpoint}, params)

    video = rng.normal(size=(2, 3, 8, 32, 32)).astype(np.float32)  # NCTHW
    with torch.no_grad():
        fused = ref.eval()(torch.from_numpy(video))
        ln = torch.nn.functional.layer_norm(
            fused, (24,), torch.from_numpy(checkpoint["clip.visual_ln_post.weight"]),
            torch.from_numpy(checkpoint["clip.visual_ln_post.bias"]), 1e-5)
        want = (ln @ torch.from_numpy(checkpoint["clip.visual_proj"])).numpy()
    got = model.apply({"params": imported}, jnp.asarray(video.transpose(0, 2, 3, 4, 1)),
                      method="encode_video")
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert np.abs(want).max() > 0.1

    back = conv.export_internvideo(imported)
    assert back.keys() == checkpoint.keys()
    for k, v in checkpoint.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_decoder_tensors_are_refused_unless_dropped_by_name(capsys):
    _, params = _ours()
    checkpoint = conv.export_internvideo(params)
    checkpoint["clip.caption_decoder.norm.weight"] = np.ones(64, np.float32)
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo({"state_dict": checkpoint}, params)
    assert e.value.unexpected == ["caption_decoder.norm.weight"]
    imported = conv.import_internvideo({"state_dict": checkpoint}, params,
                                       drop_prefixes=("caption_decoder.",))
    assert "caption_decoder.norm.weight" in capsys.readouterr().out
    np.testing.assert_array_equal(imported["logit_scale"], params["logit_scale"])
    del checkpoint["clip.visual.transformer.dec.1.ln_3.bias"]
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo(checkpoint, params, drop_prefixes=("caption_decoder.",))
    assert e.value.missing == ["visual.transformer.dec.1.ln_3.bias"]


def test_import_and_export_commands(tmp_path, monkeypatch):
    """CLI: a Lightning file -> orbax params -> the same 'clip.' state dict back."""
    from internvideo_jax.checkpointing import load_params
    from internvideo_jax.convert.__main__ import main
    monkeypatch.setitem(multimodal.SIZES, "test", SIZE)
    _, params = _ours()
    checkpoint = conv.export_internvideo(params)
    checkpoint["clip.caption_decoder.x"] = np.zeros(2, np.float32)
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in checkpoint.items()},
                "epoch": 3}, tmp_path / "mm.ckpt")
    main(["import", "--src", str(tmp_path / "mm.ckpt"), "--model", "internvideo_multimodal",
          "--size", "test", "--frames", "8", "--drop-prefix", "caption_decoder.", "--out",
          str(tmp_path / "ours")])
    got, _ = load_params(str(tmp_path / "ours"))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    main(["export", "--src", str(tmp_path / "ours"), "--to", "pth", "--out",
          str(tmp_path / "back.ckpt")])
    back = torch.load(tmp_path / "back.ckpt")["state_dict"]
    del checkpoint["clip.caption_decoder.x"]
    assert back.keys() == checkpoint.keys()
    for k, v in checkpoint.items():
        np.testing.assert_array_equal(back[k].numpy(), v, err_msg=k)
