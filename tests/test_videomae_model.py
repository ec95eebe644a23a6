"""VideoMAE model: sizes, shapes, and layers against independent NumPy implementations."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internvideo_jax.models import layers, videomae


def _encoder_params_by_formula(s: videomae.VideoMAESize, channels: int = 3) -> int:
    """Hand count of the reference encoder: patch embed, blocks, final norm (no pos embed)."""
    d, h = s.dim, s.mlp_dim
    patch_embed = channels * s.tubelet * s.patch * s.patch * d + d
    block = (2 * d) + (3 * d * d) + 2 * d + (d * d + d) + (2 * d) + (d * h + h) + (h * d + d)
    return patch_embed + s.depth * block + 2 * d


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name, published_millions", [("B", 86), ("L", 304), ("H", 632)])
def test_encoder_parameter_counts_match_published_sizes(name, published_millions):
    s = videomae.SIZES[name]
    model = videomae.VideoMAEPretrain(s)
    video = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 1568), jnp.bool_)
    params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), video, mask))["params"]
    encoder = _count(params["encoder"])
    assert encoder == _encoder_params_by_formula(s)
    assert abs(encoder / 1e6 - published_millions) / published_millions < 0.01


@pytest.mark.parametrize("name", sorted(videomae.SIZES))
def test_every_preset_output_shape(name):
    s = videomae.SIZES[name]
    size = 64 if name == "tiny" else 224
    model = videomae.VideoMAEPretrain(s, mask_ratio=0.9)
    grid = (16 // s.tubelet, size // s.patch, size // s.patch)
    n = math.prod(grid)
    video = jax.ShapeDtypeStruct((2, 16, size, size, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((2, n), jnp.bool_)
    variables = jax.eval_shape(model.init, jax.random.key(0), video, mask)
    out = jax.eval_shape(model.apply, variables, video, mask)
    num_masked = int(0.9 * grid[1] * grid[2]) * grid[0]
    assert out.shape == (2, num_masked, 3 * s.tubelet * s.patch * s.patch)
    total = _count(nn.meta.unbox(variables)["params"])
    print(f"{name}: {total / 1e6:.1f}M parameters (encoder + decoder)")


def test_vit_b_224_has_1568_tokens_and_176_masked_per_slice():
    s = videomae.SIZES["B"]
    assert videomae.token_grid((1, 16, 224, 224, 3), s) == (8, 14, 14)
    assert videomae.VideoMAEPretrain(s, 0.9).num_masked((1, 16, 224, 224, 3)) == 8 * 176


def test_sinusoid_table_matches_reference_formula():
    n, d = 37, 24
    table = layers.sinusoid_table(n, d)
    for pos in range(n):
        for j in range(d):
            angle = pos / math.pow(10000, 2 * (j // 2) / d)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[pos, j] == pytest.approx(expected, abs=1e-6)


def test_tubelet_embed_equals_strided_conv3d_in_numpy():
    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, 4, 8, 12, 3)).astype(np.float32)
    embed = layers.TubeletEmbed(5, (2, 4, 4))
    variables = embed.init(jax.random.key(0), video)
    kernel = np.asarray(nn.meta.unbox(variables)["params"]["kernel"])  # (2, 4, 4, 3, 5)
    bias = rng.normal(size=5).astype(np.float32)
    variables = {"params": {"kernel": kernel, "bias": bias}}
    out = np.asarray(embed.apply(variables, video))
    expected = []  # Conv3d with kernel = stride, tokens in (t, h, w) order
    for t in range(2):
        for h in range(2):
            for w in range(3):
                patch = video[:, 2 * t:2 * t + 2, 4 * h:4 * h + 4, 4 * w:4 * w + 4, :]
                expected.append(np.einsum("bpqrc,pqrcd->bd", patch, kernel) + bias)
    np.testing.assert_allclose(out, np.stack(expected, axis=1), rtol=1e-5, atol=1e-5)


def _np_layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _np_block(x, p, heads):
    """The reference Block written out in NumPy from the PyTorch layouts (qkv.weight [3D, D])."""
    d = x.shape[-1]
    hd = d // heads
    erf = np.vectorize(math.erf)
    qkv_w = p["attn"]["qkv"]["kernel"].reshape(d, 3 * d).T  # torch layout [3D, D]
    qkv_b = np.concatenate([p["attn"]["q_bias"].ravel(), np.zeros(d), p["attn"]["v_bias"].ravel()])
    y = _np_layer_norm(x, p["norm1"]["scale"], p["norm1"]["bias"], 1e-6)
    qkv = y @ qkv_w.T + qkv_b  # (B, N, 3D)
    b, n, _ = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)  # (B, h, N, hd) each
    att = (q * hd ** -0.5) @ k.transpose(0, 1, 3, 2)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    o = o @ p["attn"]["proj"]["kernel"].reshape(d, d) + p["attn"]["proj"]["bias"]
    x = x + o
    y = _np_layer_norm(x, p["norm2"]["scale"], p["norm2"]["bias"], 1e-6)
    h = y @ p["mlp"]["fc1"]["kernel"] + p["mlp"]["fc1"]["bias"]
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    return x + h @ p["mlp"]["fc2"]["kernel"] + p["mlp"]["fc2"]["bias"]


def test_block_matches_numpy_reference_with_nonzero_q_and_v_bias():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 16)).astype(np.float32)
    block = layers.Block(num_heads=4, mlp_dim=64)
    params = nn.meta.unbox(block.init(jax.random.key(0), x))["params"]
    # Random values everywhere, biases and norms included, so a dropped term cannot hide.
    params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32) * 0.3, params)
    out = np.asarray(block.apply({"params": params}, x))
    expected = _np_block(x.astype(np.float64), jax.tree.map(np.float64, params), 4)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_split_by_mask_keeps_token_order():
    mask = np.array([[True, False, True, False, False], [False, True, False, False, True]])
    vis, msk = videomae.split_by_mask(jnp.asarray(mask), 2)
    np.testing.assert_array_equal(vis, [[1, 3, 4], [0, 2, 3]])
    np.testing.assert_array_equal(msk, [[0, 2], [1, 4]])


def test_decoder_predicts_masked_tokens_in_order_with_their_positions():
    """With a 0-block decoder the prediction for masked token i is head(norm(mask_token + pe[i])).

    This pins the reference's decoder input: mask tokens carry the decoder sinusoid of their own
    positions, in ascending token order, and the head sees only the last N_masked tokens.
    """
    s = videomae.VideoMAESize(dim=16, depth=1, heads=2, decoder_dim=8, decoder_heads=2,
                              decoder_depth=0, patch=4)
    model = videomae.VideoMAEPretrain(s, mask_ratio=0.5)
    rng = np.random.default_rng(2)
    video = rng.normal(size=(1, 4, 8, 8, 3)).astype(np.float32)  # grid (2, 2, 2): 8 tokens
    mask = np.array([[False, True, True, False, False, True, True, False]])
    params = nn.meta.unbox(model.init(jax.random.key(0), video, mask))["params"]
    params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), params)
    out = np.asarray(model.apply({"params": params}, video, mask))[0]  # (4, 96)
    pe = layers.sinusoid_table(8, 8)
    dec = params["decoder"]
    x = params["mask_token"][0] + pe[[1, 2, 5, 6]]
    x = _np_layer_norm(x, dec["norm"]["scale"], dec["norm"]["bias"], 1e-6)
    expected = x @ dec["head"]["kernel"] + dec["head"]["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_indivisible_shapes_fail_with_the_fix():
    s = videomae.SIZES["B"]
    with pytest.raises(ValueError, match="not divisible by the tubelet size 2"):
        videomae.token_grid((1, 15, 224, 224, 3), s)
    with pytest.raises(ValueError, match="multiple of 16"):
        videomae.token_grid((1, 16, 200, 224, 3), s)


def test_every_parameter_has_logical_axis_names():
    model = videomae.VideoMAEPretrain(videomae.SIZES["tiny"], 0.9, init_values=0.1)
    video = jax.ShapeDtypeStruct((1, 16, 64, 64, 3), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 512), jnp.bool_)
    boxed = jax.eval_shape(model.init, jax.random.key(0), video, mask)["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    assert all(len(x.names) == x.value.ndim for x in leaves)


def test_layer_scale_exists_only_with_positive_init_values():
    x = np.ones((1, 3, 8), np.float32)
    with_scale = nn.meta.unbox(layers.Block(2, 16, init_values=0.1).init(jax.random.key(0), x))
    without = nn.meta.unbox(layers.Block(2, 16).init(jax.random.key(0), x))
    np.testing.assert_allclose(with_scale["params"]["gamma_1"], np.full(8, 0.1))
    np.testing.assert_allclose(with_scale["params"]["gamma_2"], np.full(8, 0.1))
    assert "gamma_1" not in without["params"]
    # gamma multiplies the residual branches: zero gammas give the identity, and with the MLP
    # branch off the attention branch's contribution is linear in gamma_1.
    block = layers.Block(2, 16, init_values=0.1)
    x = np.random.default_rng(0).normal(size=(1, 3, 8)).astype(np.float32)

    def run(g1, g2):
        p = {"params": dict(with_scale["params"], gamma_1=np.full(8, g1, np.float32),
                            gamma_2=np.full(8, g2, np.float32))}
        return np.asarray(block.apply(p, x))

    np.testing.assert_array_equal(run(0.0, 0.0), x)
    np.testing.assert_allclose(run(0.2, 0.0) - x, 2 * (run(0.1, 0.0) - x), rtol=1e-4, atol=1e-6)
    assert np.abs(run(0.1, 0.0) - x).max() > 1e-3


def test_a_mask_with_another_masked_count_is_refused():
    """The official model takes the count from the mask; ours from mask_ratio. A 90% mask given
    to a 0.75 model: a ValueError naming both, eagerly; under jit (where shapes are fixed) the
    rows with the wrong count come out NaN, the others as they are - never a wrong-length
    answer without a sign."""
    s = videomae.SIZES["tiny"]
    model = videomae.VideoMAEPretrain(s, mask_ratio=0.75)
    video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)), jnp.float32)
    n = 2 * 4 * 4  # tokens; 0.75 of each slice's 16 = 12 per slice, 24 per clip
    params = model.init(jax.random.key(0), video, jnp.zeros((2, n), bool))
    right = np.zeros((2, n), bool)
    right[:, :24] = True
    ninety = right.copy()
    ninety[0, :28] = True  # int(0.9 * 16) * 2 = 28
    with pytest.raises(ValueError, match=r"the mask hides 28 tokens in some rows, but this "
                                         r"VideoMAEPretrain \(mask_ratio=0.75\) takes exactly 24"):
        model.apply(params, video, ninety)
    out = np.asarray(jax.jit(model.apply)(params, video, ninety))
    good = np.asarray(model.apply(params, video, right))
    assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()
    np.testing.assert_allclose(out[1], good[1], rtol=1e-5, atol=1e-6)
