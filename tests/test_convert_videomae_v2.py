"""VideoMAE V2 checkpoints (OpenGVLab/VideoMAEv2) through `python -m internvideo_jax.convert`.

The released files: ViT-g/14 pretraining (vit_g_hybrid_pt_1200e: PretrainVisionTransformer, its
decoder 512 wide, 4 deep, the encoder's MLP ratio 48/11, so fc1 2234 wide; saved from a
torch.compile'd model, hence possibly '_orig_mod.' keys), ViT-g fine-tuned (VisionTransformer with
mean pooling: fc_norm, no norm; DeepSpeed 'module'), and the distilled ViT-S / ViT-B K710
classifiers (vit_s/b_k710_dl_from_giant.pth). V2's names are V1's; what differs is the g MLP
ratio (encoder and decoder), the compile prefix, and cos_attn (a per-block attn.scale, used by no
release), refused by name. Key sets and shapes come from the PyTorch modules with the official
names (internvideo_jax/torch_models/videomae.py), at real size on the meta device (zero-stride
tensors, nothing allocated) or scaled down with random weights for exact round trips.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import internvideo_jax.convert.__main__ as cli  # noqa: E402
from internvideo_jax.convert import videomae as cv  # noqa: E402
from internvideo_jax.convert.common import ConversionError, flatten  # noqa: E402
from internvideo_jax.models import videomae  # noqa: E402
from internvideo_jax.torch_models.videomae import VideoMAEClassifier, VideoMAEPretrain  # noqa: E402
from internvideo_jax.training.checkpointing import load_params  # noqa: E402

G = dict(dim=1408, depth=40, heads=16, patch=14, mlp_ratio=48 / 11)
G_PRETRAIN = dict(G, decoder_dim=512, decoder_depth=4, decoder_heads=8, tubelet=2, num_frames=16,
                  image_size=224)


def zero_stride_state_dict(module_fn) -> dict:
    """The module's state dict keys and shapes, as 1-element-storage tensors (built on meta)."""
    with torch.device("meta"):
        module = module_fn()
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape)
            for k, v in module.state_dict().items()}


def cli_import(tmp_path, checkpoint, model, *extra):
    path = str(tmp_path / "released.pth")
    torch.save(checkpoint, path)
    a = cli.parser().parse_args(["import", "--src", path, "--model", model, "--out",
                                 str(tmp_path / "out"), *extra])
    tree, boxed, description = cli.import_params(a)
    want = {p: tuple(v.shape) for p, v in flatten(nn.meta.unbox(boxed)["params"]).items()}
    assert {p: tuple(v.shape) for p, v in flatten(tree).items()} == want
    return tree, description


@pytest.mark.parametrize("prefix", ["", "_orig_mod."])
def test_vit_g_pretraining_release_imports_strictly_at_real_size(tmp_path, prefix):
    sd = zero_stride_state_dict(lambda: VideoMAEPretrain(**G_PRETRAIN))
    assert sd["decoder.blocks.0.mlp.fc1.weight"].shape == (2234, 512)  # int(512 * 48 / 11)
    assert sd["encoder.blocks.0.mlp.fc1.weight"].shape == (6144, 1408)
    tree, d = cli_import(tmp_path, {"model": {prefix + k: v for k, v in sd.items()}},
                         "videomae_pretrain")
    assert d["name"] == "g" and d["size"]["heads"] == 16 and d["size"]["decoder_heads"] == 8
    assert tree["decoder"]["transformer"]["blocks_3"]["mlp"]["fc1"]["kernel"].shape == (512, 2234)
    assert tree["decoder"]["head"]["kernel"].shape == (512, 3 * 2 * 14 * 14)


@pytest.mark.parametrize("release, arch, name", [
    ("vit_g_hybrid_pt_1200e_k710_ft", G, "g"),
    ("vit_s_k710_dl_from_giant", dict(dim=384, depth=12, heads=6, patch=16), "S"),
    ("vit_b_k710_dl_from_giant", dict(dim=768, depth=12, heads=12, patch=16), "B"),
])
@pytest.mark.parametrize("wrapper", ["module", "model", None])
def test_v2_finetuned_and_distilled_releases_import_strictly(tmp_path, release, arch, name,
                                                              wrapper):
    sd = zero_stride_state_dict(lambda: VideoMAEClassifier(
        **arch, tubelet=2, num_frames=16, image_size=224, num_classes=710))
    assert "fc_norm.weight" in sd and "norm.weight" not in sd  # mean pooling: no final norm
    tree, d = cli_import(tmp_path, {wrapper: sd, "epoch": 34} if wrapper else sd,
                         "videomae_classifier")
    assert d["name"] == name and d["num_classes"] == 710
    assert tree["head"]["kernel"].shape == (arch["dim"], 710)


# ---- scaled down, random weights: exact round trips and strict refusals -------------------------
SMALL = dict(dim=128, depth=2, heads=4, decoder_dim=64, decoder_depth=1, decoder_heads=2,
             patch=8, tubelet=2, num_frames=4, image_size=32, mlp_ratio=48 / 11)  # ViT-g's ratio


def _random(module):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def _small_pretrain_sd():
    return {k: v.numpy() for k, v in _random(VideoMAEPretrain(**SMALL)).state_dict().items()}


def test_cli_import_then_export_is_bit_exact_and_loads_strictly_in_torch(tmp_path):
    sd = _small_pretrain_sd()
    src = tmp_path / "v2.pth"
    torch.save({"model": {"_orig_mod." + k: torch.from_numpy(v) for k, v in sd.items()}}, src)
    cli.main(["import", "--src", str(src), "--model", "videomae_pretrain", "--frames", "4",
              "--image-size", "32", "--out", str(tmp_path / "params")])
    params, _ = load_params(str(tmp_path / "params"))
    assert params["decoder"]["transformer"]["blocks_0"]["mlp"]["fc1"]["kernel"].shape == (64, 279)
    cli.main(["export", "--src", str(tmp_path / "params"), "--to", "pth", "--out",
              str(tmp_path / "back.pth")])
    back = torch.load(str(tmp_path / "back.pth"), weights_only=True)["model"]
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k].numpy(), v, err_msg=k)
    VideoMAEPretrain(**SMALL).load_state_dict(back, strict=True)


def test_scaled_classifier_round_trip_is_bit_exact():
    module = _random(VideoMAEClassifier(dim=44, depth=2, heads=4, patch=8, tubelet=2,
                                        num_frames=4, image_size=32, num_classes=7,
                                        mlp_ratio=48 / 11))
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    size = videomae.VideoMAESize(dim=44, depth=2, heads=4, decoder_dim=0, decoder_heads=0,
                                 decoder_depth=0, mlp_ratio=48 / 11, patch=8)
    model = videomae.VideoMAEClassifier(size, 7)
    video = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), np.float32)
    target = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), video))["params"]
    back = cv.export_official(cv.import_official({"module": sd}, target))
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def _small_target():
    size = videomae.VideoMAESize(dim=128, depth=2, heads=4, decoder_dim=64, decoder_heads=2,
                                 decoder_depth=1, mlp_ratio=48 / 11, patch=8)
    model = videomae.VideoMAEPretrain(size)
    video = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), np.float32)
    mask = jax.ShapeDtypeStruct((1, 32), np.bool_)
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), video, mask))["params"]


def test_missing_and_unexpected_keys_are_listed():
    sd = _small_pretrain_sd()
    del sd["decoder.blocks.0.mlp.fc1.bias"]
    sd["decoder.pos_embed"] = np.zeros((1, 32, 64), np.float32)
    with pytest.raises(ConversionError) as e:
        cv.import_official(sd, _small_target())
    assert e.value.missing == ["decoder.blocks.0.mlp.fc1.bias"]
    assert e.value.unexpected == ["decoder.pos_embed"]


def test_cos_attn_checkpoint_is_refused_naming_its_scales():
    sd = _small_pretrain_sd()
    for i in range(2):
        sd[f"encoder.blocks.{i}.attn.scale"] = np.log(10 * np.ones((4, 1, 1), np.float32))
    sd["decoder.blocks.0.attn.scale"] = np.log(10 * np.ones((2, 1, 1), np.float32))
    with pytest.raises(ConversionError, match="cos_attn") as e:
        cv.import_official(sd, _small_target())
    assert e.value.unexpected == ["decoder.blocks.0.attn.scale", "encoder.blocks.0.attn.scale",
                                  "encoder.blocks.1.attn.scale"]


def test_a_decoder_mlp_of_4x_under_a_48_11_encoder_is_a_named_shape_mismatch():
    """The reference's decoder takes the encoder's ratio: a file whose decoder MLP is 4x wide is
    not a VideoMAE V2 g-shaped model, and the import says which tensor differs."""
    sd = _small_pretrain_sd()
    sd["decoder.blocks.0.mlp.fc1.weight"] = np.zeros((256, 64), np.float32)
    with pytest.raises(ConversionError, match=r"decoder.blocks.0.mlp.fc1.weight: checkpoint "
                                              r"\(256, 64\), model expects \(279, 64\)"):
        cv.import_official(sd, _small_target())
