"""CMA weights <-> the PyTorch CrossModelAttention (torch_models/cma.py, official keys for the two
encoders): with random weights in every tensor (gates and score weights included) the JAX model
gives the same three outputs, and the round trip is bit-exact and loads with strict=True."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from internvideo_jax.convert import cma as conv  # noqa: E402
from internvideo_jax.models import cma, uniformerv2 as u, videomae  # noqa: E402
from internvideo_jax.torch_models.cma import CrossModelAttention  # noqa: E402

VIDEOMAE = videomae.VideoMAESize(dim=32, depth=2, heads=2, decoder_dim=0, decoder_heads=0,
                                 decoder_depth=0, patch=8, tubelet=2)
UNIFORMER = u.UniFormerV2Size(width=24, layers=3, heads=4, patch=8, image_size=32, embed_dim=24,
                              return_list=(1, 2))


def test_cma_matches_pytorch_and_round_trips():
    torch.manual_seed(0)
    ref = CrossModelAttention(
        dict(dim=32, depth=2, heads=2, patch=8, tubelet=2, num_frames=4, image_size=32,
             num_classes=5),
        dict(image_size=32, patch=8, width=24, layers=3, heads=4, return_list=[1, 2], local=True,
             temporal_kernel=1, temporal_stride=1, num_classes=5), depth=2, heads=4)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            is_norm = name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight", "norm.weight",
                                     "norm1.weight", "norm2.weight", "ln_pre.weight",
                                     "proj.0.weight"))
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5) + float(is_norm))
        for name, b in ref.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    ref.eval()
    checkpoint = {k: v.numpy() for k, v in ref.state_dict().items()}

    model = cma.CrossModelAttention(VIDEOMAE, UNIFORMER, 5, local=True, depth=2, heads=4)
    rng = np.random.default_rng(0)
    vm = rng.normal(size=(2, 3, 4, 32, 32)).astype(np.float32)
    un = rng.normal(size=(2, 3, 4, 32, 32)).astype(np.float32)
    to_ours = lambda x: jnp.asarray(x.transpose(0, 2, 3, 4, 1))  # noqa: E731
    target = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), to_ours(vm), to_ours(un)))
    variables = conv.import_torch(checkpoint, target)
    with torch.no_grad():
        want = [t.numpy() for t in ref(torch.from_numpy(vm), torch.from_numpy(un))]
    with jax.default_matmul_precision("highest"):
        got = model.apply(variables, to_ours(vm), to_ours(un))
    for name, w in zip(("logits", "videomae", "uniformer"), want):
        rel = np.abs(np.asarray(got[name]) - w).max() / np.abs(w).max()
        assert rel < 1e-5, (name, rel)
    # the blocks matter: without them the UniFormerV2 head would see the fused feature alone
    assert np.abs(want[2] - ref.uniformerv2(torch.from_numpy(un)).detach().numpy()).max() > 1e-3

    back = conv.export_torch(variables)
    assert back.keys() == checkpoint.keys()
    for k, v in checkpoint.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[k], v, err_msg=k)
    ref.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in back.items()},
                        strict=True)
