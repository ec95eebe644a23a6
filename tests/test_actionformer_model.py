"""ActionFormer head: pyramid shapes, padding invariance, receptive field, and its layers against
independent NumPy implementations (masked conv, masked banded softmax attention)."""
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internvideo_jax.infra import sharding
from internvideo_jax.models import actionformer as af

TINY = af.SIZES["tiny"]


def _features(rng, b, t, c=TINY.input_dim):
    return jnp.asarray(rng.normal(size=(b, t, c)), jnp.float32)


def _perturbed(params, seed=0, std=0.1):
    """Every parameter moved by N(0, std): LayerNorm scales and biases off their 1 / 0 inits."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [np.asarray(p) + std * rng.normal(size=p.shape).astype(
        np.float32) for p in leaves])


def _init(model, x, mask):
    """Unboxed variables with every parameter perturbed (a trained-looking model)."""
    params = nn.meta.unbox(model.init(jax.random.key(0), x, mask))["params"]
    return {"params": _perturbed(params)}


def _np_conv1d(x, kernel, stride=1, depthwise=False):
    """x (T, C_in), kernel (K, C_in or 1, C_out) -> (T / stride, C_out), zero 'same' padding,
    cross-correlation (as a PyTorch Conv1d) written with np.convolve."""
    k, _, c_out = kernel.shape
    out = np.zeros((x.shape[0], c_out))
    for o in range(c_out):
        inputs = [o] if depthwise else range(x.shape[1])
        for c in inputs:
            taps = kernel[::-1, 0 if depthwise else c, o]  # convolve flips: un-flip it
            out[:, o] += np.convolve(x[:, c], taps, mode="same")
    return out[::stride]


def _np_layer_norm(x, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def test_tiny_pyramid_shapes_strides_and_masks():
    rng = np.random.default_rng(0)
    x = _features(rng, 2, 64)
    mask = jnp.ones((2, 64), bool).at[1, 37:].set(False)
    model = af.ActionFormer(TINY, num_classes=5)
    variables = model.init(jax.random.key(0), x, mask)
    out = model.apply(variables, x, mask)
    assert TINY.strides == (1, 2, 4, 8)
    assert [y.shape for y in out["cls_logits"]] == [(2, 64, 5), (2, 32, 5), (2, 16, 5), (2, 8, 5)]
    assert [y.shape for y in out["offsets"]] == [(2, 64, 2), (2, 32, 2), (2, 16, 2), (2, 8, 2)]
    for level, m in enumerate(out["masks"]):
        assert m.dtype == jnp.bool_
        np.testing.assert_array_equal(m, np.asarray(mask)[:, ::2 ** level])
    assert all(y.dtype == jnp.float32 for y in out["cls_logits"] + out["offsets"])


@pytest.mark.parametrize("name, length", [("tiny", 64), ("demo", 128), ("thumos", 2304),
                                          ("anet", 192)])
def test_every_preset_builds_its_pyramid(name, length):
    s = af.get_size(name)
    x = jax.ShapeDtypeStruct((2, length, s.input_dim), jnp.float32)
    mask = jax.ShapeDtypeStruct((2, length), jnp.bool_)
    model = af.ActionFormer(s, num_classes=7)
    variables = jax.eval_shape(model.init, jax.random.key(0), x, mask)
    out = jax.eval_shape(model.apply, variables, x, mask)
    assert len(s.windows) == len(s.strides) == s.arch[2] + 1
    assert [y.shape for y in out["cls_logits"]] == [(2, length // st, 7) for st in s.strides]
    assert [y.shape for y in out["offsets"]] == [(2, length // st, 2) for st in s.strides]


def test_window_per_level_must_match_the_pyramid():
    with pytest.raises(ValueError, match="one per pyramid level, 4"):
        dataclasses.replace(TINY, window=(9, 9, 9))
    assert dataclasses.replace(TINY, window=(9, 9, 5, -1)).windows == (9, 9, 5, -1)
    assert TINY.windows == (9, 9, 9, 9)


def test_length_not_divisible_by_coarsest_stride_fails():
    x = jnp.zeros((1, 60, TINY.input_dim))
    model = af.ActionFormer(TINY, num_classes=3)
    with pytest.raises(ValueError, match=r"60 feature frames are not divisible by 2\*\*3 = 8"):
        model.init(jax.random.key(0), x, jnp.ones((1, 60), bool))


# tiny with the ActivityNet model's options: a window per level (full attention at the last),
# the absolute position table
TINY_ANET = dataclasses.replace(TINY, window=(9, 9, 5, -1), abs_pe=True)


@pytest.mark.parametrize("size, lengths, short_t, long_t", [
    (TINY, (64, 64), 64, 128), (TINY, (36, 64), 64, 96), (TINY_ANET, (36, 64), 64, 96)])
def test_padded_frames_change_no_valid_output_and_are_zero(size, lengths, short_t, long_t):
    """The same clips padded further (junk features, mask False) give the same outputs on the
    valid frames of every level; the long version runs level 0 in attention chunks."""
    rng = np.random.default_rng(1)
    model = af.ActionFormer(size, num_classes=4, path_drop=0.0)
    short = np.zeros((2, short_t, TINY.input_dim), np.float32)
    short_mask = np.zeros((2, short_t), bool)
    for i, n in enumerate(lengths):
        short[i, :n] = rng.normal(size=(n, TINY.input_dim))
        short_mask[i, :n] = True
    long = 100 * rng.normal(size=(2, long_t, TINY.input_dim)).astype(np.float32)  # junk
    long_mask = np.zeros((2, long_t), bool)
    long[:, :short_t][short_mask] = short[short_mask]
    long_mask[:, :short_t] = short_mask
    variables = _init(model, jnp.asarray(long), jnp.asarray(long_mask))
    a = model.apply(variables, jnp.asarray(short), jnp.asarray(short_mask))
    b = model.apply(variables, jnp.asarray(long), jnp.asarray(long_mask))
    for level in range(len(size.strides)):
        valid = np.asarray(a["masks"][level])  # (2, T_l) of the short version
        t_l = valid.shape[1]
        np.testing.assert_array_equal(np.asarray(b["masks"][level])[:, :t_l], valid)
        for key in ("cls_logits", "offsets"):
            ya, yb = np.asarray(a[key][level]), np.asarray(b[key][level])
            np.testing.assert_allclose(yb[:, :t_l][valid], ya[valid], rtol=1e-5, atol=1e-5)
            assert np.abs(ya[valid]).max() > 0.1  # not trivially equal
            for y, m in ((ya, valid), (yb, np.asarray(b["masks"][level]))):
                assert np.all(y[~m] == 0)


@pytest.mark.parametrize("block", [64, 8])
def test_receptive_field_of_one_block_is_exact(block):
    """Perturbing input frame j moves the level-0 outputs at |i - j| <= R and nowhere else:
    R = 1 per embedding conv + 1 for the depthwise q/k/v conv + window // 2 + 1 per head conv.
    block 8: local attention in 8 chunks of 8 queries; 64: one masked call."""
    window = 9
    size = af.ActionFormerSize(input_dim=8, embed_dim=16, num_heads=2, arch=(1, 1, 0),
                               window=window, head_dim=16, head_layers=3)
    model = af.ActionFormer(size, num_classes=3, path_drop=0.0, attention_block=block)
    rng = np.random.default_rng(2)
    t, j = 64, 29
    x = _features(rng, 1, t, 8)
    mask = jnp.ones((1, t), bool)
    variables = _init(model, x, mask)
    moved = x.at[0, j].add(jnp.asarray(5 * rng.normal(size=8), jnp.float32))
    radius = 1 + 1 + window // 2 + size.head_layers
    a = model.apply(variables, x, mask)
    b = model.apply(variables, moved, mask)
    for key in ("cls_logits", "offsets"):
        changed = np.any(np.asarray(a[key][0]) != np.asarray(b[key][0]), axis=-1)[0]  # (T,)
        inside = np.abs(np.arange(t) - j) <= radius
        assert not changed[~inside].any(), np.nonzero(changed & ~inside)
        if key == "cls_logits":  # the bound is tight: both edges move
            assert changed[j - radius] and changed[j + radius]


@pytest.mark.parametrize("window, stride, block", [
    (9, 1, 64),  # one masked call with the band
    (9, 1, 8),  # chunks of 8 queries
    (5, 2, 4),  # chunks, downsampling q/k/v convs
    (0, 1, 64),  # full attention
    (-1, 2, 64),  # full attention, downsampling
])
def test_local_attention_matches_numpy(window, stride, block):
    rng = np.random.default_rng(3)
    b, t, d, heads = 2, 32, 16, 2
    x = _features(rng, b, t, d)
    mask = np.ones((b, t), bool)
    mask[0, 25:] = False
    mask[1, [3, 4, 10]] = False  # holes, not only a padded tail
    module = af.LocalMaskedAttention(heads, window, stride, block=block)
    params = nn.meta.unbox(module.init(jax.random.key(0), x, jnp.asarray(mask)))["params"]
    params = jax.tree.map(np.asarray, _perturbed(params))
    out, out_mask = module.apply({"params": params}, x, jnp.asarray(mask))

    hd = d // heads
    radius = window // 2 if window > 1 else t
    for i in range(b):
        xm = np.where(mask[i, :, None], np.asarray(x[i], np.float64), 0)  # (T, D)
        m = mask[i, ::stride]  # (T', )

        def qkv(name):
            y = _np_conv1d(xm, params[f"{name}_conv"]["kernel"], stride, depthwise=True)
            y = _np_layer_norm(y * m[:, None], params[f"{name}_norm"])
            p = params[name]
            return np.einsum("td,dhk->thk", y, p["kernel"]) + p["bias"]  # (T', h, hd)

        q, k, v = qkv("query"), qkv("key"), qkv("value")
        pos = np.arange(len(m))
        allowed = (np.abs(pos[:, None] - pos[None, :]) <= radius) & m[None, :]  # (T', T')
        logits = np.einsum("qhc,khc->hqk", q, k) / math.sqrt(hd)
        logits = np.where(allowed[None], logits, -1e30)  # padded queries: no key
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs = probs / probs.sum(-1, keepdims=True)
        att = np.einsum("hqk,khc->qhc", probs, v)
        p = params["proj"]
        expected = np.einsum("qhc,hcd->qd", att, p["kernel"]) + p["bias"]
        expected = np.where(m[:, None], expected, 0)  # padded queries are zeroed
        np.testing.assert_array_equal(np.asarray(out_mask[i]), m)
        np.testing.assert_allclose(np.asarray(out[i]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_size, stride, depthwise", [(3, 1, False), (5, 1, False),
                                                            (3, 2, False), (3, 2, True)])
def test_masked_conv_matches_numpy_convolve(kernel_size, stride, depthwise):
    rng = np.random.default_rng(4)
    c_in = 4
    c_out = c_in if depthwise else 5
    x = _features(rng, 2, 16, c_in)
    mask = np.ones((2, 16), bool)
    mask[0, 11:] = False
    mask[1, 5] = False
    conv = af.MaskedConv1D(c_out, kernel_size, stride, depthwise=depthwise)
    params = nn.meta.unbox(conv.init(jax.random.key(0), x, jnp.asarray(mask)))["params"]
    params = jax.tree.map(np.asarray, _perturbed(params))  # a non-zero bias
    y, y_mask = conv.apply({"params": params}, x, jnp.asarray(mask))
    for i in range(2):
        xm = np.where(mask[i, :, None], np.asarray(x[i]), 0)
        m = mask[i, ::stride]
        expected = _np_conv1d(xm, params["kernel"], stride, depthwise) + params["bias"]
        expected = np.where(m[:, None], expected, 0)
        np.testing.assert_array_equal(np.asarray(y_mask[i]), m)
        np.testing.assert_allclose(np.asarray(y[i]), expected, rtol=1e-5, atol=1e-5)


def test_fresh_model_logits_start_at_the_prior_and_offsets_are_non_negative():
    rng = np.random.default_rng(5)
    x = _features(rng, 2, 64)
    mask = jnp.ones((2, 64), bool).at[0, 50:].set(False)
    model = af.ActionFormer(TINY, num_classes=20)
    variables = model.init(jax.random.key(1), x, mask)
    bias = nn.meta.unbox(variables)["params"]["cls_head"]["out"]["bias"]
    np.testing.assert_allclose(bias, -math.log(99), rtol=1e-6)
    out = model.apply(variables, x, mask)
    valid = np.concatenate([np.asarray(y)[np.asarray(m)].ravel()
                            for y, m in zip(out["cls_logits"], out["masks"])])
    assert abs(valid.mean() + math.log(99)) < 0.1, valid.mean()
    offsets = np.concatenate([np.asarray(y).ravel() for y in out["offsets"]])
    assert offsets.min() >= 0 and offsets.max() > 0


def test_every_parameter_has_logical_names_from_the_rules_table():
    x = jax.ShapeDtypeStruct((1, 64, TINY.input_dim), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 64), jnp.bool_)
    variables = jax.eval_shape(af.ActionFormer(TINY, num_classes=3).init, jax.random.key(0), x,
                               mask)
    boxed = jax.tree.leaves(variables, is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert boxed and all(isinstance(v, nn.Partitioned) for v in boxed)
    known = {name for name, _ in sharding.RULES}
    for v in boxed:
        assert len(v.names) == v.value.ndim
        assert set(v.names) - {None} <= known, v.names
    # gamma_1/gamma_2 (AffineDropPath) exist only with drop path
    params = nn.meta.unbox(variables)["params"]
    assert "gamma_1" in params["stem_0"] and "gamma_2" in params["branch_2"]


def test_training_mode_runs_dropout_and_drop_path_with_finite_gradients():
    rng = np.random.default_rng(6)
    x = _features(rng, 2, 64)
    mask = jnp.ones((2, 64), bool).at[1, 30:].set(False)
    model = af.ActionFormer(TINY, num_classes=3, dropout=0.1, path_drop=0.5)
    variables = model.init(jax.random.key(0), x, mask)

    def loss(params, key):
        out = model.apply({"params": params}, x, mask, deterministic=False,
                          rngs={"dropout": key})
        return sum(jnp.sum(y) for y in out["cls_logits"] + out["offsets"])

    params = variables["params"]
    value, grads = jax.jit(jax.value_and_grad(loss))(params, jax.random.key(1))
    assert np.isfinite(value)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(nn.meta.unbox(grads)))
    assert loss(params, jax.random.key(1)) != loss(params, jax.random.key(2))


def test_bfloat16_compute_gives_float32_outputs_close_to_float32():
    rng = np.random.default_rng(7)
    x = _features(rng, 1, 64)
    mask = jnp.ones((1, 64), bool)
    model = af.ActionFormer(TINY, num_classes=3)
    variables = model.init(jax.random.key(0), x, mask)
    a = model.apply(variables, x, mask)
    b = af.ActionFormer(TINY, num_classes=3, dtype=jnp.bfloat16).apply(variables, x, mask)
    for ya, yb in zip(a["cls_logits"], b["cls_logits"]):
        assert yb.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(yb), np.asarray(ya), atol=0.1)


def test_local_attention_at_2304_frames_never_forms_the_full_logits():
    """Window 19 over 2,304 frames (THUMOS14's training length): the compiled attention's
    scratch memory, forward and backward, is a fraction of the same band as one masked call over
    all T x T pairs (block >= T; on a 2-core CPU: 16 vs 162 MiB forward, 23 vs 252 backward)."""
    b, t, heads, hd = 1, 2304, 4, 128
    q = jax.ShapeDtypeStruct((b, t, heads, hd), jnp.float32)
    mask = jax.ShapeDtypeStruct((b, t), jnp.bool_)

    def scratch(block, backward):
        def fn(q, k, v, m):
            return af.local_attention(q, k, v, m, radius=19 // 2, block=block)

        if backward:
            fn = jax.grad(lambda q, k, v, m, f=fn: f(q, k, v, m).sum(), argnums=(0, 1, 2))
        return jax.jit(fn).lower(q, q, q, mask).compile().memory_analysis().temp_size_in_bytes

    for backward in (False, True):
        assert scratch(64, backward) < scratch(t, backward) / 5


def _reference_param_count(s: af.ActionFormerSize, num_classes: int) -> int:
    """Hand count of the reference's THUMOS14 model (embd_with_ln, fpn_with_ln, head_with_ln:
    the convs before a LayerNorm have no bias; AffineDropPath scales with droppath > 0)."""
    d, k, hd = s.embed_dim, s.kernel, s.head_dim
    norm = 2 * d
    embed = s.input_dim * d * k + norm + (s.arch[0] - 1) * (d * d * k + norm)
    attn = 3 * (3 * d + norm) + 4 * (d * d + d)  # depthwise q/k/v convs + norms, 4 1x1 convs
    mlp = d * s.mlp_dim + s.mlp_dim + s.mlp_dim * d + d
    block = 2 * norm + attn + mlp + 2 * d
    levels = s.arch[2] + 1
    tower = d * hd * k + 2 * hd + (s.head_layers - 2) * (hd * hd * k + 2 * hd)
    cls = tower + hd * num_classes * k + num_classes
    reg = tower + hd * 2 * k + 2 + levels
    return embed + (s.arch[1] + s.arch[2]) * block + levels * norm + cls + reg


def test_thumos14_configuration_has_the_reference_parameter_count():
    s = af.ActionFormerSize(input_dim=2304)
    x = jax.ShapeDtypeStruct((1, 2304, 2304), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 2304), jnp.bool_)
    variables = jax.eval_shape(af.ActionFormer(s, num_classes=20).init, jax.random.key(0), x,
                               mask)
    count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nn.meta.unbox(variables)))
    assert count == _reference_param_count(s, 20)
    print(f"ActionFormer THUMOS14: {count / 1e6:.2f}M parameters")
