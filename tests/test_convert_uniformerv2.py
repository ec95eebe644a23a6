"""UniFormerV2 official weights -> ours: an independent PyTorch implementation with the official
names (internvideo_jax/torch_models/uniformerv2.py), random weights everywhere (the zero-initialised parts too),
must give our model's logits; export gives the same state dict back."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from internvideo_jax.convert import common  # noqa: E402
from internvideo_jax.convert import uniformerv2 as conv  # noqa: E402
from internvideo_jax.models import uniformerv2 as u  # noqa: E402
from internvideo_jax.torch_models.uniformerv2 import UniFormerV2  # noqa: E402

SIZE = u.UniFormerV2Size(width=24, layers=3, heads=4, patch=8, image_size=32, embed_dim=24,
                         return_list=(1, 2))


def _randomised_reference(local: bool, kt: int, st: int) -> "UniFormerV2":
    torch.manual_seed(0)
    ref = UniFormerV2(image_size=32, patch=8, width=24, layers=3, heads=4, return_list=[1, 2],
                      local=local, temporal_kernel=kt, temporal_stride=st, num_classes=5)
    with torch.no_grad():  # no parameter left at zero or one: every tensor must be mapped right
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5)
                    + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight")) else 0))
        for name, b in ref.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return ref.eval()


@pytest.mark.parametrize("local,kt,st", [(False, 1, 1), (True, 3, 2)])
def test_official_weights_give_the_reference_logits(local, kt, st):
    ref = _randomised_reference(local, kt, st)
    video = np.random.default_rng(0).normal(size=(2, 3, 8, 32, 32)).astype(np.float32)  # NCTHW
    with torch.no_grad():
        expected = ref(torch.from_numpy(video)).numpy()
    ours = u.UniFormerV2Classifier(SIZE, 5, temporal_kernel=kt, temporal_stride=st, local=local)
    x = jnp.asarray(video.transpose(0, 2, 3, 4, 1))  # (B, T, H, W, C)
    target = jax.eval_shape(lambda: nn.meta.unbox(ours.init(jax.random.key(0), x)))
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    variables = conv.import_official(state, target)
    got = ours.apply(variables, x)
    # float32, two implementations: max error 3.6e-7 on logits of size ~2 when written
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.1  # not a trivially small output

    back = conv.export_official(variables)
    assert back.keys() == state.keys()
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_missing_and_unexpected_keys_are_listed():
    ref = _randomised_reference(False, 1, 1)
    ours = u.UniFormerV2Classifier(SIZE, 5)
    target = jax.eval_shape(lambda: nn.meta.unbox(ours.init(
        jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)))))
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    del state["backbone.transformer.dec.1.ln_3.bias"]
    state["backbone.transformer.extra.weight"] = np.zeros(3)
    with pytest.raises(common.ConversionError) as e:
        conv.import_official({"model_state": {"module." + k: v for k, v in state.items()}},
                             target)
    assert e.value.missing == ["backbone.transformer.dec.1.ln_3.bias"]
    assert e.value.unexpected == ["backbone.transformer.extra.weight"]


def test_import_command_reads_the_architecture_off_the_tensors(tmp_path, monkeypatch):
    from internvideo_jax.training.checkpointing import load_variables
    from internvideo_jax.convert.__main__ import main
    monkeypatch.setitem(u.SIZES, "test", SIZE)
    ref = _randomised_reference(True, 3, 2)
    torch.save({"model_state": ref.state_dict()}, tmp_path / "k400.pyth")
    main(["import", "--src", str(tmp_path / "k400.pyth"), "--model", "uniformerv2_classifier",
          "--size", "test", "--frames", "8", "--mesh", "data=2,fsdp=4", "--out",
          str(tmp_path / "ours")])  # sharded on the way (BatchNorm statistics replicated)
    variables, _ = load_variables(str(tmp_path / "ours"))
    video = np.random.default_rng(1).normal(size=(1, 3, 8, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(video)).numpy()
    model = u.UniFormerV2Classifier(SIZE, 5, temporal_kernel=3, temporal_stride=2, local=True)
    got = model.apply(variables, jnp.asarray(video.transpose(0, 2, 3, 4, 1)))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_export_command_runs_in_the_pytorch_module(tmp_path):
    """Our classifier (random weights, BatchNorm statistics included) -> `convert export --to pth`
    -> the PyTorch module loads it strictly and gives our logits; HF export is refused."""
    from internvideo_jax.convert.__main__ import main, save_params
    ours = u.UniFormerV2Classifier(SIZE, 5, temporal_kernel=3, temporal_stride=2, local=True)
    x = np.random.default_rng(2).normal(size=(2, 8, 32, 32, 3)).astype(np.float32)
    variables = jax.device_get(nn.meta.unbox(ours.init(jax.random.key(3), x)))
    leaves, tree = jax.tree.flatten(variables)
    rng = np.random.default_rng(4)  # non-trivial everywhere, variances positive
    variables = jax.tree.unflatten(tree, [np.abs(v) + 0.5 if v.ndim == 1 and i % 7 == 0 else
                                          v + 0.2 * rng.standard_normal(v.shape).astype(v.dtype)
                                          for i, v in enumerate(leaves)])
    variables["batch_stats"] = jax.tree.map(lambda v: np.abs(v) + 0.5, variables["batch_stats"])
    save_params(variables, str(tmp_path / "ours"))
    main(["export", "--src", str(tmp_path / "ours"), "--to", "pth", "--out",
          str(tmp_path / "u.pyth")])
    ref = UniFormerV2(image_size=32, patch=8, width=24, layers=3, heads=4, return_list=[1, 2],
                      local=True, temporal_kernel=3, temporal_stride=2, num_classes=5)
    ref.load_state_dict(torch.load(tmp_path / "u.pyth")["model_state"], strict=True)
    with torch.no_grad():
        got = ref.eval()(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
    want = np.asarray(ours.apply(variables, jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit, match="no HF transformers implementation"):
        main(["export", "--src", str(tmp_path / "ours"), "--to", "hf", "--out",
              str(tmp_path / "hf")])
