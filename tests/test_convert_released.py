"""Every released checkpoint family imports at its real size, with no --size: the official
architecture's full state-dict key set and shapes, held in zero-stride tensors (a 1-element
storage each, so a ViT-g file is a few kB and nothing the size of the model is allocated), read
through the converter's own file reading and mapped strictly onto our model.

Key sets come from independent sources: the PyTorch modules with the official names
(internvideo_jax/torch_models, built on the meta device) for UniFormerV2, the VideoMAE classifier and
the InternVideo multimodal model; for VideoMAE pretraining, written out below from the reference's
modeling_pretrain.py structure.
"""
import flax.linen as nn
import pytest

torch = pytest.importorskip("torch")

import internvideo_jax.convert.__main__ as cli  # noqa: E402
from internvideo_jax.convert.common import flatten  # noqa: E402
from internvideo_jax.torch_models.multimodal import InternVideoMultimodal  # noqa: E402
from internvideo_jax.torch_models.uniformerv2 import UniFormerV2  # noqa: E402
from internvideo_jax.torch_models.videomae import VideoMAEClassifier  # noqa: E402


def zero_stride(shapes: dict) -> dict:
    """{key: shape or (shape, dtype)} -> {key: a zero-stride torch tensor of that shape}."""
    out = {}
    for k, spec in shapes.items():
        shape, dtype = spec if isinstance(spec, tuple) and len(spec) == 2 and isinstance(
            spec[1], torch.dtype) else (spec, torch.float32)
        out[k] = torch.zeros((), dtype=dtype).expand(torch.Size(shape))
    return out


def meta_state_dict(module_fn) -> dict:
    """The state dict's shapes and dtypes of a module built on the meta device (no storage)."""
    with torch.device("meta"):
        module = module_fn()
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def import_file(tmp_path, checkpoint: dict, model: str, *extra) -> tuple[dict, dict]:
    """Save, then `convert import` up to the mapped tree (numpy views into the file's tensors):
    (the imported tree, the description)."""
    path = str(tmp_path / "released.pth")
    torch.save(checkpoint, path)
    a = cli.parser().parse_args(["import", "--src", path, "--model", model, "--out",
                                 str(tmp_path / "out"), *extra])
    tree, boxed, description = cli.import_params(a)
    target = nn.meta.unbox(boxed)  # all collections; UniFormerV2's import gives them all
    want = {p: tuple(v.shape) for p, v in flatten(target if "params" in tree
                                                  else target["params"]).items()}
    got = {p: tuple(v.shape) for p, v in flatten(tree).items()}
    assert got == want  # every parameter filled (import_state_dict also refuses otherwise)
    allocated = sum(v.nbytes for v in flatten(tree).values() if any(s != 0 for s in v.strides))
    assert allocated < 1 << 20, f"{allocated} bytes allocated: the import copied tensors"
    return tree, description


# ---- UniFormerV2: the model zoo's families -------------------------------------------------------
B16 = dict(image_size=224, patch=16, width=768, layers=12, heads=12)
L14 = dict(image_size=224, patch=14, width=1024, layers=24, heads=16)
L14_336 = dict(L14, image_size=336)
UNIFORMERV2_RELEASES = {
    # name: (torch module arguments, our named size or None, the wrapper the file uses)
    "k400_b16_f8x224": (dict(B16, return_list=list(range(8, 12)), local=False, temporal_kernel=1,
                             temporal_stride=1, num_classes=400), "B/16", "model_state"),
    "k710_l14_f8x336": (dict(L14_336, return_list=list(range(20, 24)), local=False,
                             temporal_kernel=1, temporal_stride=1, num_classes=710), "L/14@336",
                        None),
    "k400_l14_f16x224_tdown": (dict(L14, return_list=list(range(20, 24)), local=False,
                                    temporal_kernel=3, temporal_stride=2, num_classes=400), "L/14",
                               "model_state"),
    "sthv2_b16_f16x224": (dict(B16, return_list=list(range(4, 12)), local=True, temporal_kernel=3,
                               temporal_stride=2, num_classes=174), None, "model_state"),
    "sthv2_l14_f16x224": (dict(L14, return_list=list(range(8, 24)), local=True, temporal_kernel=3,
                               temporal_stride=2, num_classes=174), None, "model_state"),
    "k400_frozen_l14_f8x336": (dict(L14_336, return_list=list(range(20, 24)), local=False,
                                    temporal_kernel=1, temporal_stride=1, num_classes=400,
                                    frozen=True), "L/14@336", "model_state"),
}


@pytest.mark.parametrize("release", sorted(UNIFORMERV2_RELEASES))
def test_uniformerv2_release_imports_at_real_size_without_size(release, tmp_path, capsys):
    kwargs, name, wrapper = UNIFORMERV2_RELEASES[release]
    sd = zero_stride(meta_state_dict(lambda: UniFormerV2(**kwargs)))
    checkpoint = ({wrapper: sd, "optimizer_state": {}, "epoch": 30, "cfg": "TRAIN:\n  ..."}
                  if wrapper else sd)
    tree, d = import_file(tmp_path, checkpoint, "uniformerv2_classifier", "--frames", "16")
    assert d["name"] == name
    assert tuple(d["size"]["return_list"]) == tuple(kwargs["return_list"])
    assert (d["size"]["width"], d["size"]["layers"], d["size"]["heads"], d["size"]["patch"],
            d["size"]["image_size"]) == (kwargs["width"], kwargs["layers"], kwargs["heads"],
                                         kwargs["patch"], kwargs["image_size"])
    assert (d["temporal_kernel"], d["temporal_stride"], d["local"], d["frozen"],
            d["num_classes"]) == (kwargs["temporal_kernel"], kwargs["temporal_stride"],
                                  kwargs["local"], kwargs.get("frozen", False),
                                  kwargs["num_classes"])
    n_global = len(kwargs["return_list"])
    assert len([k for k in tree["params"]["backbone"] if k.startswith("dec_")]) == n_global
    assert ("balance" in tree["params"]["backbone"]) != kwargs.get("frozen", False)
    assert ("batch_stats" in tree) == kwargs["local"]
    out = capsys.readouterr().out
    assert f"{n_global} global UniBlocks on layers {kwargs['return_list'][0]}-" in out
    assert "read off the tensors" in out


def test_a_size_that_disagrees_is_refused_naming_the_difference(tmp_path):
    kwargs, _, _ = UNIFORMERV2_RELEASES["sthv2_b16_f16x224"]
    sd = zero_stride(meta_state_dict(lambda: UniFormerV2(**kwargs)))
    with pytest.raises(cli.UsageError, match=r"--size B/16 is not the UniFormerV2 this checkpoint "
                       r"holds: return_list \(4, 5, 6, 7, 8, 9, 10, 11\) in the checkpoint, "
                       r"\(8, 9, 10, 11\) in --size B/16; leave --size out"):
        import_file(tmp_path, {"model_state": sd}, "uniformerv2_classifier", "--size", "B/16")


# ---- VideoMAE ------------------------------------------------------------------------------------
def official_pretrain_keys(dim, depth, mlp, patch, tubelet, ddim, ddepth) -> dict:
    """modeling_pretrain.PretrainVisionTransformer's state dict (sinusoid tables are plain
    attributes, not saved): encoder.{patch_embed.proj, blocks.i, norm}, encoder_to_decoder (no
    bias), mask_token (1, 1, Dd), decoder.{blocks.i, norm, head (3 * tubelet * patch^2)}."""
    keys = {"encoder.patch_embed.proj.weight": (dim, 3, tubelet, patch, patch),
            "encoder.patch_embed.proj.bias": (dim,)}
    # the decoder's blocks take the encoder's mlp_ratio (ViT-g: int(512 * 48 / 11) = 2234)
    for prefix, d, n, hidden in (("encoder.blocks", dim, depth, mlp),
                                 ("decoder.blocks", ddim, ddepth, int(ddim * (mlp / dim)))):
        for i in range(n):
            b = f"{prefix}.{i}."
            keys.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                         b + "attn.qkv.weight": (3 * d, d), b + "attn.q_bias": (d,),
                         b + "attn.v_bias": (d,), b + "attn.proj.weight": (d, d),
                         b + "attn.proj.bias": (d,), b + "norm2.weight": (d,),
                         b + "norm2.bias": (d,), b + "mlp.fc1.weight": (hidden, d),
                         b + "mlp.fc1.bias": (hidden,), b + "mlp.fc2.weight": (d, hidden),
                         b + "mlp.fc2.bias": (d,)})
    out = 3 * tubelet * patch * patch
    keys.update({"encoder.norm.weight": (dim,), "encoder.norm.bias": (dim,),
                 "encoder_to_decoder.weight": (ddim, dim), "mask_token": (1, 1, ddim),
                 "decoder.norm.weight": (ddim,), "decoder.norm.bias": (ddim,),
                 "decoder.head.weight": (out, ddim), "decoder.head.bias": (out,)})
    return keys


VIDEOMAE_PRETRAIN = {
    # name: ((dim, depth, mlp, patch, tubelet, decoder dim, decoder depth), our size or None)
    "vit_b_k400_pretrain": ((768, 12, 3072, 16, 2, 384, 4), "B"),
    "vit_l_k400_pretrain": ((1024, 24, 4096, 16, 2, 512, 12), "L"),
    "vit_h_k400_pretrain": ((1280, 32, 5120, 16, 2, 640, 12), "H"),
    "internvideo_mae_h": ((1280, 32, 5120, 16, 2, 512, 8), "H_internvideo"),
    "videomaev2_h_pretrain": ((1280, 32, 5120, 16, 2, 512, 4), None),  # V2's 4-deep decoder
    "videomaev2_g_pretrain": ((1408, 40, 6144, 14, 2, 512, 4), "g"),
}


@pytest.mark.parametrize("release", sorted(VIDEOMAE_PRETRAIN))
def test_videomae_pretraining_release_imports_without_size(release, tmp_path):
    arch, name = VIDEOMAE_PRETRAIN[release]
    sd = zero_stride(official_pretrain_keys(*arch))
    # the DeepSpeed layout the model zoo's files have ('module'), beside what save_model adds
    tree, d = import_file(tmp_path, {"module": sd, "epoch": 800}, "videomae_pretrain")
    assert d["name"] == name
    dim, depth, mlp, patch, tubelet, ddim, ddepth = arch
    s = d["size"]
    assert (s["dim"], s["depth"], s["patch"], s["tubelet"], s["decoder_dim"],
            s["decoder_depth"]) == (dim, depth, patch, tubelet, ddim, ddepth)
    assert round(s["dim"] * s["mlp_ratio"]) == mlp
    assert s["heads"] == 16 if dim > 1024 else dim // 64  # H and g: 16 heads, as released
    assert len(tree["encoder"]["transformer"]) == depth


VIDEOMAE_CLASSIFIER = {
    "vit_b_k400_ft": (dict(dim=768, depth=12, heads=12, patch=16), "B"),
    "vit_l_k400_ft": (dict(dim=1024, depth=24, heads=16, patch=16), "L"),
    "vit_h_k400_ft": (dict(dim=1280, depth=32, heads=16, patch=16), "H"),
    "vit_g_k710_ft": (dict(dim=1408, depth=40, heads=16, patch=14, mlp_ratio=48 / 11), "g"),
}


@pytest.mark.parametrize("release", sorted(VIDEOMAE_CLASSIFIER))
def test_videomae_finetuned_release_imports_without_size(release, tmp_path):
    kwargs, name = VIDEOMAE_CLASSIFIER[release]
    sd = zero_stride(meta_state_dict(lambda: VideoMAEClassifier(
        **kwargs, tubelet=2, num_frames=16, image_size=224, num_classes=400)))
    tree, d = import_file(tmp_path, {"model": sd, "epoch": 90}, "videomae_classifier")
    assert d["name"] == name and d["num_classes"] == 400
    assert d["size"]["heads"] == kwargs["heads"]
    assert tree["head"]["kernel"].shape == (kwargs["dim"], 400)


# ---- InternVideo multimodal ---------------------------------------------------------------------
MULTIMODAL = {
    "B/16": dict(image_size=224, patch=16, width=768, layers=12, heads=12,
                 return_list=[8, 9, 10, 11], embed_dim=512, text_width=512, text_layers=12,
                 text_heads=8),
    "L/14": dict(image_size=224, patch=14, width=1024, layers=24, heads=16,
                 return_list=[20, 21, 22, 23], embed_dim=768, text_width=768, text_layers=12,
                 text_heads=12),
}


@pytest.mark.parametrize("name", sorted(MULTIMODAL))
def test_internvideo_multimodal_release_imports_without_size(name, tmp_path):
    kwargs = MULTIMODAL[name]
    shapes = meta_state_dict(lambda: InternVideoMultimodal(
        kwargs, decoder_layers=4, decoder_heads=kwargs["text_width"] // 64))
    shapes["clip.text_mask_embedding"] = (1, 1, kwargs["text_width"])  # the MLM token
    sd = zero_stride(shapes)
    for k in sd:  # the one buffer whose value is not zero: the reference's rotary frequencies
        if k.endswith("rotary_emb.inv_freq"):
            sd[k] = 1.0 / 10000 ** (torch.arange(0, 64, 2).float() / 64)  # head dim 64
    tree, d = import_file(tmp_path, {"state_dict": sd, "epoch": 9, "global_step": 12000,
                                     "pytorch-lightning_version": "1.5.10"},
                          "internvideo_multimodal", "--frames", "8",
                          "--drop-prefix", "clip.text_mask_embedding")
    assert d["name"] == name and d["caption"] is True
    assert tuple(d["size"]["video"]["return_list"]) == tuple(kwargs["return_list"])
    assert d["size"]["text"]["heads"] == kwargs["text_heads"]
    assert "decoder" in tree
