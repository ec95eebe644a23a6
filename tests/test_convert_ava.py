"""The VideoMAE AVA detector's converter path (MCG-NJU/VideoMAE-Action-Detection checkpoints):
`convert import --model videomae_detector` and `convert export --to pth`, strict, at real sizes
with no --size, and the converted weights against the PyTorch reference
(torch_models/videomae.py VideoMAEDetector, with its own point-by-point RoIAlign: torchvision is
not installed here).

Parity covers the whole model: the encoder tokens after the final norm (the sinusoid table
resized to another frame size, as the reference's interpolate_pos_embed_online), the head's
linear map on the same pooled features, and the logits through time mean, RoIAlign (adaptive
sampling, aligned=False) and the 7x7 max.
"""
import argparse

import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import internvideo_jax.convert.__main__ as cli  # noqa: E402
from internvideo_jax.convert import common  # noqa: E402
from internvideo_jax.convert import videomae as cv  # noqa: E402
from internvideo_jax.convert.common import flatten  # noqa: E402
from internvideo_jax.models import ava_head, videomae  # noqa: E402
from internvideo_jax.models.roi_align import roi_align as jax_roi_align  # noqa: E402
from internvideo_jax.torch_models import videomae as tv  # noqa: E402
from internvideo_jax.training.checkpointing import load_params  # noqa: E402
from tests.test_convert_released import import_file, meta_state_dict, zero_stride  # noqa: E402

# 128 wide (the tiny size's width: 4 heads by the named-size rule), 2 layers, patch 8; the
# position table trained at 4 frames x 32 px (grid (2, 4, 4)), run at 64 x 80 px (grid (2, 8, 10))
TINY = dict(dim=128, depth=2, heads=4, patch=8, tubelet=2, num_frames=4, image_size=32,
            num_classes=5)
SIZE = videomae.VideoMAESize(dim=128, depth=2, heads=4, decoder_dim=0, decoder_heads=0,
                             decoder_depth=0, patch=8)
FRAMES, HEIGHT, WIDTH = 4, 64, 80
# [x1, y1, x2, y2] in input pixels, inside the frame (the reference clips to [0, size - 1]):
# widths up to 79 px = 9.9 cells, so 2 adaptive points per bin along x
BOXES = np.array([[[3.0, 5.0, 40.5, 60.0], [0.0, 0.0, 79.0, 63.0], [50.2, 10.7, 70.9, 30.1]],
                  [[10.0, 20.0, 30.0, 50.0], [60.0, 2.0, 78.0, 62.5], [5.0, 5.0, 9.0, 8.0]]],
                 np.float32)


def _reference(seed=0):
    """The torch reference with random values in every tensor (norms and biases too)."""
    torch.manual_seed(seed)
    model = tv.VideoMAEDetector(**TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _numpy_sd(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _target(model, video, boxes) -> dict:
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), video, boxes))["params"]


def _saved(sd: dict, path) -> str:
    """The file run_class_finetuning.py's utils.save_model writes (loss scaler on: no DeepSpeed)."""
    torch.save({"model": {k: torch.as_tensor(v) for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 29,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0},
                "args": argparse.Namespace(model="vit_base_patch16_224", nb_classes=80,
                                           input_size=224, num_frames=16, init_scale=0.001)},
               str(path))
    return str(path)


def _rois(boxes: np.ndarray) -> torch.Tensor:
    """(B, M, 4) -> the reference's (B * M, 5) [clip index, x1, y1, x2, y2]."""
    b, m, _ = boxes.shape
    index = np.repeat(np.arange(b, dtype=np.float32), m)[:, None]
    return torch.from_numpy(np.concatenate([index, boxes.reshape(-1, 4)], axis=1))


def _rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def official_ava_keys(dim, depth, mlp, patch, tubelet, classes) -> dict:
    """modeling_finetune.py VisionTransformer's state dict, written out from its structure:
    patch_embed.proj (Conv3d), blocks.i (q_bias/v_bias, qkv without bias), norm, head; nothing
    else (no pos_embed, fc_norm, gamma_1/2 or pooler tensors)."""
    keys = {"patch_embed.proj.weight": (dim, 3, tubelet, patch, patch),
            "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                     b + "attn.q_bias": (dim,), b + "attn.v_bias": (dim,),
                     b + "attn.qkv.weight": (3 * dim, dim), b + "attn.proj.weight": (dim, dim),
                     b + "attn.proj.bias": (dim,), b + "norm2.weight": (dim,),
                     b + "norm2.bias": (dim,), b + "mlp.fc1.weight": (mlp, dim),
                     b + "mlp.fc1.bias": (mlp,), b + "mlp.fc2.weight": (dim, mlp),
                     b + "mlp.fc2.bias": (dim,)})
    keys.update({"norm.weight": (dim,), "norm.bias": (dim,), "head.weight": (classes, dim),
                 "head.bias": (classes,)})
    return keys


# ---- the CLI round trip, strict -------------------------------------------------------------
def test_import_export_round_trip_is_bit_exact_and_loads_strictly(tmp_path, capsys):
    ref = _reference()
    sd = _numpy_sd(ref)
    src = _saved(sd, tmp_path / "checkpoint-29.pth")
    out = str(tmp_path / "params")
    cli.main(["import", "--src", src, "--model", "videomae_detector", "--out", out])
    printed = capsys.readouterr().out
    assert "'model'" in printed and "read off the tensors" in printed
    assert "5 classes" in printed
    description = cli.architecture.find(out)
    assert description["family"] == "videomae_detector" and description["num_classes"] == 5
    assert (description["size"]["dim"], description["size"]["depth"],
            description["size"]["heads"], description["size"]["patch"]) == (128, 2, 4, 8)
    params, _ = load_params(out)
    assert set(params) == {"encoder", "head"} and "norm" in params["encoder"]
    assert params["head"]["kernel"].shape == (128, 5)

    cli.main(["export", "--src", out, "--to", "pth", "--out", str(tmp_path / "back.pth")])
    back = torch.load(str(tmp_path / "back.pth"), weights_only=True)
    assert set(back) == {"model"}  # the entry save_model writes and auto_load_model reads
    back = back["model"]
    assert sorted(back) == sorted(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k].numpy(), sd[k], err_msg=k)
        assert back[k].dtype == torch.float32
    fresh = tv.VideoMAEDetector(**TINY)
    fresh.load_state_dict(back, strict=True)  # the reference's --resume load is strict


def test_export_to_hf_is_refused(tmp_path):
    src = _saved(_numpy_sd(_reference()), tmp_path / "a.pth")
    cli.main(["import", "--src", src, "--model", "videomae_detector", "--out",
              str(tmp_path / "p")])
    with pytest.raises(SystemExit, match="exports with --to pth only"):
        cli.main(["export", "--src", str(tmp_path / "p"), "--to", "hf", "--out",
                  str(tmp_path / "hf")])
    assert not (tmp_path / "hf").exists()


def test_an_extra_key_is_refused_by_name(tmp_path):
    sd = _numpy_sd(_reference())
    sd["pos_embed"] = np.zeros((1, 32, 128), np.float32)  # a learnable table: not this model
    with pytest.raises(SystemExit, match=r"unexpected keys \(1\): \['pos_embed'\]"):
        cli.main(["import", "--src", _saved(sd, tmp_path / "a.pth"), "--model",
                  "videomae_detector", "--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()


def test_a_missing_key_is_refused_by_name(tmp_path):
    sd = _numpy_sd(_reference())
    del sd["blocks.1.attn.v_bias"]
    with pytest.raises(SystemExit, match=r"missing keys \(1\): \['blocks.1.attn.v_bias'\]"):
        cli.main(["import", "--src", _saved(sd, tmp_path / "a.pth"), "--model",
                  "videomae_detector", "--out", str(tmp_path / "p")])


def test_a_missing_head_is_refused_by_name(tmp_path):
    sd = _numpy_sd(_reference())
    del sd["head.weight"], sd["head.bias"]
    src = _saved(sd, tmp_path / "a.pth")
    for classes in (["--num-classes", "80"], []):
        with pytest.raises(SystemExit, match=r"missing keys \(2\): \['head.bias', 'head.weight'\]"):
            cli.main(["import", "--src", src, "--model", "videomae_detector", *classes, "--out",
                      str(tmp_path / "p")])


def test_a_classifier_or_pretraining_file_is_named_for_what_it_is(tmp_path):
    sd = _numpy_sd(_reference())
    classifier = {("fc_norm." + k[5:] if k.startswith("norm.") else k): v for k, v in sd.items()}
    with pytest.raises(SystemExit, match=r"fine-tuned classifier.*--model videomae_classifier"
                       r"(.|\n)*missing keys \(2\): \['norm.weight', 'norm.bias'\](.|\n)*"
                       r"unexpected keys \(2\): \['fc_norm.bias', 'fc_norm.weight'\]"):
        cli.main(["import", "--src", _saved(classifier, tmp_path / "c.pth"), "--model",
                  "videomae_detector", "--out", str(tmp_path / "p")])
    pretrain = {f"encoder.{k}": v for k, v in sd.items() if not k.startswith("head.")}
    with pytest.raises(SystemExit, match=r"pretraining checkpoint: --model videomae_pretrain"):
        cli.main(["import", "--src", _saved(pretrain, tmp_path / "e.pth"), "--model",
                  "videomae_detector", "--out", str(tmp_path / "p")])


def test_a_wrong_num_classes_is_a_shape_mismatch(tmp_path):
    with pytest.raises(SystemExit, match=r"head.weight: checkpoint \(5, 128\), model expects "
                                         r"\(80, 128\)"):
        cli.main(["import", "--src", _saved(_numpy_sd(_reference()), tmp_path / "a.pth"),
                  "--model", "videomae_detector", "--num-classes", "80", "--out",
                  str(tmp_path / "p")])


def test_a_deepspeed_module_entry_imports(tmp_path):
    sd = _numpy_sd(_reference())
    torch.save({"module": {k: torch.from_numpy(v) for k, v in sd.items()}},
               str(tmp_path / "mp_rank_00_model_states.pt"))
    a = cli.parser().parse_args(["import", "--src", str(tmp_path / "mp_rank_00_model_states.pt"),
                                 "--model", "videomae_detector", "--out", str(tmp_path / "p")])
    tree, _, description = cli.import_params(a)
    assert description["family"] == "videomae_detector"
    np.testing.assert_array_equal(tree["head"]["kernel"], sd["head.weight"].T)


# ---- the released files' key sets at real size ---------------------------------------------
AVA_RELEASES = {
    # modeling_finetune.py's vit_*_patch16_224: (dim, depth, heads), our size name
    "vit_s_ava": ((384, 12, 6), "S"),
    "vit_b_ava": ((768, 12, 12), "B"),
    "vit_l_ava": ((1024, 24, 16), "L"),
    "vit_h_ava": ((1280, 32, 16), "H"),
}


@pytest.mark.parametrize("release", sorted(AVA_RELEASES))
def test_released_ava_checkpoint_imports_at_real_size_without_size(release, tmp_path):
    (dim, depth, heads), name = AVA_RELEASES[release]
    shapes = meta_state_dict(lambda: tv.VideoMAEDetector(
        dim=dim, depth=depth, heads=heads, patch=16, tubelet=2, num_frames=16, image_size=224,
        num_classes=80))
    # the torch module and the structure written out from the reference agree, key for key
    assert {k: s for k, (s, _) in shapes.items()} == official_ava_keys(dim, depth, 4 * dim, 16, 2,
                                                                       80)
    checkpoint = {"model": zero_stride(shapes), "optimizer": {}, "epoch": 29, "scaler": {},
                  "args": argparse.Namespace(nb_classes=80, input_size=224, num_frames=16)}
    tree, d = import_file(tmp_path, checkpoint, "videomae_detector")
    assert d["family"] == "videomae_detector" and d["name"] == name and d["num_classes"] == 80
    assert (d["size"]["dim"], d["size"]["depth"], d["size"]["heads"], d["size"]["patch"],
            d["size"]["tubelet"]) == (dim, depth, heads, 16, 2)
    assert tree["head"]["kernel"].shape == (dim, 80)
    assert tree["encoder"]["norm"]["scale"].shape == (dim,)
    assert len(tree["encoder"]["transformer"]) == depth


# ---- parity against the torch reference ------------------------------------------------------
@pytest.fixture(scope="module")
def converted():
    ref = _reference(1)
    ours = ava_head.VideoMAEDetector(SIZE, TINY["num_classes"], pos_grid=(2, 4, 4))
    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, FRAMES, HEIGHT, WIDTH, 3)).astype(np.float32)
    params = cv.import_official({"model": ref.state_dict()}, _target(ours, video, BOXES))
    return ref, ours, params, video


def test_encoder_tokens_after_the_final_norm_match(converted):
    ref, ours, params, video = converted
    with torch.no_grad():
        tokens, grid = ref.tokens(torch.from_numpy(video.transpose(0, 4, 1, 2, 3)))
    assert grid == (2, 8, 10)
    with jax.default_matmul_precision("highest"):
        got = ours.apply({"params": params}, video, method=ours.tokens)
    err = _rel_err(got, tokens.numpy())
    print(f"tokens after norm: max relative error {err:.2e}")
    assert err < 1e-5


def test_head_linear_map_matches(converted):
    ref, _, params, _ = converted
    pooled = np.random.default_rng(1).normal(size=(7, 128)).astype(np.float32)
    with torch.no_grad():
        want = ref.head(torch.from_numpy(pooled)).numpy()
    got = pooled.astype(np.float64) @ np.asarray(params["head"]["kernel"], np.float64) + \
        np.asarray(params["head"]["bias"], np.float64)
    assert _rel_err(got, want) < 1e-6


def test_logits_match_through_roi_align(converted):
    ref, ours, params, video = converted
    with torch.no_grad():
        want = ref(torch.from_numpy(video.transpose(0, 4, 1, 2, 3)), _rois(BOXES)).numpy()
    with jax.default_matmul_precision("highest"):
        got = ours.apply({"params": params}, video, BOXES)  # (B, M, K)
    err = _rel_err(np.asarray(got).reshape(-1, TINY["num_classes"]), want)
    print(f"detector logits: max relative error {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_torch_reference_roi_align_matches_ours(sampling_ratio):
    """The reference's RoIAlign stand-in (point by point) and models/roi_align.py (separable
    einsums) agree: two transcriptions of torchvision's arithmetic."""
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 6, 8, 10)).astype(np.float32)  # (B, C, H, W)
    boxes = np.array([[[0.0, 0.0, 150.0, 120.0], [17.0, 33.0, 60.0, 70.0]],
                      [[100.0, 90.0, 159.0, 127.0], [4.0, 100.0, 30.0, 127.0]]], np.float32)
    want = tv.roi_align(torch.from_numpy(features), _rois(boxes), 7, 1 / 16, sampling_ratio)
    got = jax_roi_align(features.transpose(0, 2, 3, 1), boxes, 7, spatial_scale=1 / 16,
                        sampling_ratio=sampling_ratio, aligned=False)  # (B, M, 7, 7, C)
    got = np.asarray(got).reshape(-1, 7, 7, 6).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want.numpy(), atol=2e-5)


def test_torch_reference_roi_align_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(3)
    features = torch.from_numpy(rng.normal(size=(2, 4, 8, 10)).astype(np.float32))
    rois = _rois(np.array([[[0.0, 0.0, 150.0, 120.0], [17.0, 33.0, 60.0, 70.0]],
                           [[100.0, 90.0, 159.0, 127.0], [-20.0, 100.0, 30.0, 140.0]]],
                          np.float32))
    for ratio in (0, 2):
        want = torchvision.ops.roi_align(features, rois, 7, 1 / 16, ratio)
        np.testing.assert_allclose(tv.roi_align(features, rois, 7, 1 / 16, ratio).numpy(),
                                   want.numpy(), atol=1e-6)


def test_official_names_of_our_detector_tree():
    ours = ava_head.VideoMAEDetector(SIZE, 5)
    target = _target(ours, np.zeros((1, 4, 32, 32, 3), np.float32), np.zeros((1, 1, 4),
                                                                                np.float32))
    names = {r.key for r in cv.official_rules(target)}
    assert names == set(official_ava_keys(128, 2, 512, 8, 2, 5))
    assert cv.is_detector(target)
    assert not cv.is_detector(_target_classifier())
    flat = flatten(target)
    assert ("encoder", "norm", "scale") in flat and ("head", "kernel") in flat


def _target_classifier():
    model = videomae.VideoMAEClassifier(SIZE, 5)
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                        np.zeros((1, 4, 32, 32, 3), np.float32)))["params"]


def test_strict_import_api_refuses_a_stray_key():
    ref = _reference()
    sd = _numpy_sd(ref)
    sd["fc_norm.weight"] = np.ones(128, np.float32)
    ours = ava_head.VideoMAEDetector(SIZE, 5)
    target = _target(ours, np.zeros((1, 4, 32, 32, 3), np.float32), np.zeros((1, 1, 4),
                                                                                np.float32))
    with pytest.raises(common.ConversionError,
                       match=r"unexpected keys \(1\): \['fc_norm.weight'\]"):
        cv.import_official(sd, target)
