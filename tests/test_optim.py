"""Weight-decay groups and the lr schedule against the reference's rules, computed independently."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvideo_jax import optim
from internvideo_jax.models import videomae


def test_no_decay_on_biases_norms_and_mask_token():
    s = videomae.VideoMAESize(dim=16, depth=1, heads=2, decoder_dim=8, decoder_heads=2,
                              decoder_depth=1, patch=4)
    model = videomae.VideoMAEPretrain(s, 0.5)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2, 8, 8, 3)), jnp.zeros((1, 4), bool))
    mask = optim.decay_mask(params["params"])
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    # The reference: no decay when 1-D in torch (biases, norms, q_bias, v_bias) or in the skip list.
    expected_no_decay = {k for k in flat if k.endswith(("bias", "scale")) or k == "mask_token"}
    assert {k for k, v in flat.items() if not v} == expected_no_decay
    assert flat["encoder/transformer/blocks_0/attn/qkv/kernel"]
    assert not flat["encoder/transformer/blocks_0/attn/q_bias"]
    assert flat["encoder_to_decoder/kernel"]


def test_warmup_then_cosine_to_min_lr():
    peak, min_lr, warmup, total = 1e-3, 1e-5, 10, 110
    sched = optim.warmup_cosine(peak, min_lr, warmup, total)
    for step in range(total):
        if step < warmup:
            expected = peak * step / warmup
        else:
            expected = min_lr + 0.5 * (peak - min_lr) * (
                1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        np.testing.assert_allclose(float(sched(step)), expected, rtol=1e-5, atol=1e-9)


def test_lr_scaling_rule():
    assert optim.scaled_lr(1.5e-4, 2048) == 1.5e-4 * 8
