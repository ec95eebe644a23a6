"""VideoMAE conversion against HF transformers' PyTorch models with the same random weights."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from input_pipelines import normalization  # noqa: E402
from input_pipelines.masking import tube_mask  # noqa: E402
from internvideo_jax.training import losses  # noqa: E402
from internvideo_jax.convert import common  # noqa: E402
from internvideo_jax.convert import videomae as cv  # noqa: E402
from internvideo_jax.models import videomae  # noqa: E402

SIZE = videomae.VideoMAESize(dim=32, depth=2, heads=4, decoder_dim=16, decoder_heads=2,
                             decoder_depth=1, patch=8)
FRAMES, IMAGE, CLASSES = 4, 32, 5
GRID = (FRAMES // 2, IMAGE // 8, IMAGE // 8)
MEAN, STD = (np.asarray(v, np.float32) for v in normalization.get("imagenet"))


def _inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch, FRAMES, IMAGE, IMAGE, 3)).astype(np.uint8)
    video = ((pixels / 255.0 - MEAN) / STD).astype(np.float32)  # (B, T, H, W, C)
    mask = np.stack([tube_mask(GRID, 0.75, rng) for _ in range(batch)])
    return pixels, video, mask


def _randomize(model):
    """Random values in every tensor (biases and norms too), so no mapping error can hide."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _hf_pretrain():
    cfg = transformers.VideoMAEConfig(**cv.hf_config(SIZE, num_frames=FRAMES, image_size=IMAGE))
    return _randomize(transformers.VideoMAEForPreTraining(cfg))


def _hf_classifier():
    cfg = transformers.VideoMAEConfig(**cv.hf_config(SIZE, num_frames=FRAMES, image_size=IMAGE,
                                                     num_classes=CLASSES))
    return _randomize(transformers.VideoMAEForVideoClassification(cfg))


def _target(model, *args):
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *args))["params"]


def _rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_hf_pretraining_model_matches_ours_logits_and_loss():
    hf = _hf_pretrain()
    pixels, video, mask = _inputs()
    ours = videomae.VideoMAEPretrain(SIZE, mask_ratio=0.75)
    params = cv.import_hf(hf.state_dict(), _target(ours, video, mask))
    with torch.no_grad():
        out = hf(torch.from_numpy(video.transpose(0, 1, 4, 2, 3)),  # HF: (B, T, C, H, W)
                 bool_masked_pos=torch.from_numpy(mask))
    with jax.default_matmul_precision("highest"):
        pred = ours.apply({"params": params}, video, mask)
        target = losses.norm_pixel_target(jnp.asarray(pixels, jnp.float32) / 255.0,
                                          (2, SIZE.patch, SIZE.patch))
        loss = losses.masked_reconstruction_loss(pred, target, jnp.asarray(mask))
    err = _rel_err(pred, out.logits.numpy())
    print(f"pretraining logits max relative error {err:.2e}")
    assert err < 1e-5
    # HF computes its target from the normalised input (un-normalising with the same constants);
    # ours from the uint8 pixels: the losses agree to float32 round-off.
    np.testing.assert_allclose(float(loss), float(out.loss), rtol=2e-5)


def test_hf_classifier_matches_ours():
    hf = _hf_classifier()
    _, video, _ = _inputs()
    ours = videomae.VideoMAEClassifier(SIZE, CLASSES)
    params = cv.import_hf(hf.state_dict(), _target(ours, video))
    with torch.no_grad():
        logits = hf(torch.from_numpy(video.transpose(0, 1, 4, 2, 3))).logits.numpy()
    with jax.default_matmul_precision("highest"):
        got = ours.apply({"params": params}, video)
    err = _rel_err(got, logits)
    print(f"classifier logits max relative error {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_torch_jax_torch_round_trip_is_bit_exact(layout):
    hf = _hf_pretrain()
    _, video, mask = _inputs()
    target = _target(videomae.VideoMAEPretrain(SIZE, 0.75), video, mask)
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    if layout == "official":
        sd = cv.hf_to_official(sd, pretraining=True)
        back = cv.export_official(cv.import_official(sd, target))
    else:
        back = cv.export_hf(cv.import_hf(sd, target))
    assert sorted(back) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_official_layout_names(tmp_path):
    _, video, mask = _inputs()
    target = _target(videomae.VideoMAEPretrain(SIZE, 0.75), video, mask)
    names = {r.key for r in cv.official_rules(target)}
    assert {"encoder.patch_embed.proj.weight", "encoder.blocks.1.attn.qkv.weight",
            "encoder.blocks.1.attn.q_bias", "encoder.blocks.1.attn.v_bias", "encoder.norm.weight",
            "encoder_to_decoder.weight", "mask_token", "decoder.blocks.0.mlp.fc2.bias",
            "decoder.norm.bias", "decoder.head.weight"} <= names
    assert not any("k_bias" in n for n in names)
    clf = _target(videomae.VideoMAEClassifier(SIZE, CLASSES), video)
    names = {r.key for r in cv.official_rules(clf)}
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "fc_norm.weight",
            "head.weight"} <= names


def test_exported_hf_directory_loads_with_from_pretrained(tmp_path):
    from safetensors.numpy import save_file
    hf = _hf_classifier()
    _, video, _ = _inputs()
    ours = videomae.VideoMAEClassifier(SIZE, CLASSES)
    params = cv.import_hf(hf.state_dict(), _target(ours, video))
    params = jax.tree.map(lambda x: x + 0.01, params)  # different from hf's weights
    save_file(cv.export_hf(params), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cv.hf_config(
        SIZE, num_frames=FRAMES, image_size=IMAGE, num_classes=CLASSES)))
    loaded = transformers.VideoMAEForVideoClassification.from_pretrained(str(tmp_path)).eval()
    assert loaded.config.layer_norm_eps == 1e-6
    with torch.no_grad():
        logits = loaded(torch.from_numpy(video.transpose(0, 1, 4, 2, 3))).logits.numpy()
    with jax.default_matmul_precision("highest"):
        got = ours.apply({"params": params}, video)
    assert _rel_err(got, logits) < 1e-5


def _official_sd():
    _, video, mask = _inputs()
    target = _target(videomae.VideoMAEPretrain(SIZE, 0.75), video, mask)
    sd = cv.hf_to_official({k: v.numpy() for k, v in _hf_pretrain().state_dict().items()}, True)
    return sd, target


def test_wrapped_and_prefixed_checkpoints_load():
    sd, target = _official_sd()
    ref = cv.import_official(sd, target)
    for wrapped in ({"model": sd}, {"module": {f"module.{k}": v for k, v in sd.items()}}):
        got = cv.import_official(wrapped, target)
        jax.tree.map(np.testing.assert_array_equal, got, ref)


def test_missing_key_is_refused_by_name():
    sd, target = _official_sd()
    del sd["encoder.blocks.1.attn.v_bias"]
    with pytest.raises(common.ConversionError,
                       match=r"missing keys \(1\): \['encoder.blocks.1.attn.v_bias'\]"):
        cv.import_official(sd, target)


def test_unexpected_key_is_refused_by_name():
    sd, target = _official_sd()
    sd["encoder.blocks.0.attn.k_bias"] = np.zeros(32, np.float32)
    with pytest.raises(common.ConversionError,
                       match=r"unexpected keys \(1\): \['encoder.blocks.0.attn.k_bias'\]"):
        cv.import_official(sd, target)


def test_wrong_shape_is_refused_by_name():
    sd, target = _official_sd()
    sd["decoder.head.weight"] = np.zeros((10, 16), np.float32)
    with pytest.raises(common.ConversionError,
                       match=r"shape mismatches \(1\): decoder.head.weight: checkpoint \(10, 16\)"):
        cv.import_official(sd, target)


def test_wrong_prefix_is_refused_with_every_key():
    sd, target = _official_sd()
    sd = {f"teacher.{k}": v for k, v in sd.items()}
    with pytest.raises(common.ConversionError) as e:
        cv.import_official(sd, target)
    assert len(e.value.missing) == len(sd) and len(e.value.unexpected) == len(sd)
    assert "teacher.encoder.norm.weight" in str(e.value)


def test_hf_key_bias_is_not_silently_dropped():
    hf = _hf_pretrain()
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    sd["videomae.encoder.layer.0.attention.attention.key.bias"] = np.ones(32, np.float32)
    _, video, mask = _inputs()
    with pytest.raises(common.ConversionError, match="key.bias"):
        cv.import_hf(sd, _target(videomae.VideoMAEPretrain(SIZE, 0.75), video, mask))
