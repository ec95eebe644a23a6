"""Attention implementations against NumPy formulas (forward and backward, float64); the tubelet
embedding of a subset; the exact GELU."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internvideo_jax.infra import sharding
from internvideo_jax.models import attention as attention_lib
from internvideo_jax.models import layers, videomae
from internvideo_jax.models.attention import attention, use_implementation


def _numpy_attention(q, k, v):
    """softmax(q k^T / sqrt(hd)) v in float64; (B, Nq, h, hd) layouts."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


def _inputs(b, nq, nk, h, hd, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, nq, h, hd)).astype(dtype)
    k = rng.standard_normal((b, nk, h, hd)).astype(dtype)
    v = rng.standard_normal((b, nk, h, hd)).astype(dtype)
    cotangent = rng.standard_normal((b, nq, h, hd)).astype(dtype)
    return q, k, v, cotangent


# (B, Nq, Nk, heads, head_dim): one block; several equal blocks (1,568 = 4 x 392, VideoMAE's
# 16x224 grid); a padded last block (1,100 = 3 x 367 - 1); cross-attention with Nq != Nk.
SHAPES = [(2, 300, 300, 2, 16), (1, 1568, 1568, 2, 32), (2, 1100, 1100, 1, 16),
          (1, 700, 530, 3, 8)]


@pytest.mark.parametrize("shape", SHAPES)
def test_blocked_forward_matches_numpy(shape):
    q, k, v, _ = _inputs(*shape)
    out = jax.jit(attention_lib.blocked_attention)(q, k, v)
    np.testing.assert_allclose(np.asarray(out), _numpy_attention(q, k, v), atol=2e-6, rtol=1e-5)


def _numpy_attention_grads(q, k, v, d_out):
    """(dq, dk, dv) of sum(attention(q, k, v) * d_out), by the textbook backward formula, float64."""
    q, k, v, d_out = (np.asarray(x, np.float64) for x in (q, k, v, d_out))
    scale = 1 / math.sqrt(q.shape[-1])
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)  # (B, h, Nq, Nk)
    dv = np.einsum("bhqk,bqhd->bkhd", probs, d_out)
    d_probs = np.einsum("bqhd,bkhd->bhqk", d_out, v)
    d_logits = probs * (d_probs - (d_probs * probs).sum(-1, keepdims=True))
    dq = np.einsum("bhqk,bkhd->bqhd", d_logits, k) * scale
    dk = np.einsum("bhqk,bqhd->bkhd", d_logits, q) * scale
    return dq, dk, dv


@pytest.mark.parametrize("shape", SHAPES)
def test_blocked_gradients_match_numpy_backward(shape):
    """The hand-written backward pass against the float64 formula; as close as XLA's autodiff
    through jax.nn.dot_product_attention is (float32 sums over Nk keys: errors grow with Nk)."""
    q, k, v, cotangent = _inputs(*shape)
    expected = _numpy_attention_grads(q, k, v, cotangent)

    def grads(implementation):
        def loss(q, k, v):
            return jnp.sum(attention(q, k, v, implementation=implementation) * cotangent)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    for name, ours, xla, ref in zip("qkv", grads("blocked"), grads("xla"), expected):
        scale = np.abs(ref).max()
        ours_error = np.abs(np.asarray(ours) - ref).max() / scale
        xla_error = np.abs(np.asarray(xla) - ref).max() / scale
        print(f"d{name}: blocked {ours_error:.1e}, xla {xla_error:.1e} of the largest entry")
        assert ours_error < 1e-5, f"d{name}"
        assert ours_error < 2 * xla_error + 1e-6, f"d{name}"


def test_blocked_bfloat16_stays_close_to_float32():
    """bf16 inputs: float32 logits, softmax and accumulation; error at bf16 resolution."""
    q, k, v, _ = _inputs(1, 600, 600, 2, 32)
    ref = _numpy_attention(q, k, v)
    out = attention_lib.blocked_attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)))
    assert out.dtype == jnp.bfloat16
    # Inputs rounded to bf16 (2^-9 relative) move the output by a few 1e-3 on outputs of size ~0.3.
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=2e-2)


def _uses_blocked(fn, *args) -> bool:
    """Whether tracing fn now takes the blocked kernel. Traces are cached per function and the
    implementation is chosen at trace time, so each call traces a fresh wrapper."""
    return "custom_vjp_call" in str(jax.make_jaxpr(lambda *a: fn(*a))(*args))


def test_auto_takes_blocked_on_cpu_only_for_long_unmasked_sequences():
    long_q, long_k, long_v, _ = _inputs(1, 600, 600, 2, 8)
    short = _inputs(1, 64, 64, 2, 8)[:3]
    assert jax.default_backend() == "cpu"
    assert _uses_blocked(attention, long_q, long_k, long_v)
    assert not _uses_blocked(attention, *short)
    assert not _uses_blocked(lambda q, k, v: attention(q, k, v, is_causal=True),
                             long_q, long_k, long_v)
    mask = np.ones((1, 1, 600, 600), bool)
    assert not _uses_blocked(lambda q, k, v: attention(q, k, v, mask=mask), long_q, long_k, long_v)
    with use_implementation("xla"):
        assert not _uses_blocked(attention, long_q, long_k, long_v)
    assert _uses_blocked(attention, long_q, long_k, long_v)  # the override ended with the block


def test_auto_takes_xla_inside_a_mesh_of_several_devices():
    """The blocked kernel loops over batch x heads, which a sharded batch must not do."""
    q, k, v, _ = _inputs(2, 600, 600, 2, 8)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 1}, jax.devices()[:2])
    with jax.set_mesh(mesh):
        assert not _uses_blocked(attention, q, k, v)
    one = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    with jax.set_mesh(one):
        assert _uses_blocked(attention, q, k, v)


def _pretend_gpu(monkeypatch):
    """jax.default_backend() says 'gpu' (what 'auto' reads); the arrays still live on the CPU, so
    cuDNN itself refuses at trace time ('cuDNN is not detected'), as on a GPU without it."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")


def test_auto_asks_for_cudnn_on_gpu_for_half_precision_only(monkeypatch):
    """JAX's own default is the XLA path even on a GPU; 'auto' must ask for cuDNN's fused kernel
    where cuDNN can take the call: bf16/fp16, no mask, head dim a multiple of 8 up to 128."""
    _pretend_gpu(monkeypatch)

    def bf16(*shape):
        return jnp.zeros(shape, jnp.bfloat16)

    assert attention_lib._auto(bf16(2, 1568, 6, 64), bf16(2, 1568, 6, 64), None, False) == "cudnn"
    assert attention_lib._auto(bf16(2, 77, 8, 64), bf16(2, 77, 8, 64), None, True) == "cudnn"
    assert attention_lib._auto(bf16(2, 76, 8, 64), bf16(2, 256, 1, 64), None, False) == "cudnn"
    half = jnp.zeros((1, 8, 2, 128), jnp.float16)
    assert attention_lib._auto(half, half, None, False) == "cudnn"
    f32 = jnp.zeros((2, 1568, 6, 64), jnp.float32)
    assert attention_lib._auto(f32, f32, None, False) == "xla"  # cuDNN has no float32 kernel
    mask = jnp.ones((1, 1, 1568, 1568), bool)
    assert attention_lib._auto(bf16(2, 1568, 6, 64), bf16(2, 1568, 6, 64), mask, False) == "xla"
    assert attention_lib._auto(bf16(2, 16, 2, 12), bf16(2, 16, 2, 12), None, False) == "xla"
    assert attention_lib._auto(bf16(2, 16, 2, 256), bf16(2, 16, 2, 256), None, False) == "xla"


def test_auto_falls_back_to_xla_with_a_warning_where_cudnn_refuses(monkeypatch, caplog):
    """On a 'GPU' without cuDNN the automatic choice still computes attention (the XLA path's
    values, exactly) and says once why; an explicit 'cudnn' raises cuDNN's refusal instead."""
    q, k, v, _ = (jnp.asarray(x, jnp.bfloat16) for x in _inputs(2, 40, 40, 2, 16))
    expected = attention(q, k, v, implementation="xla")
    _pretend_gpu(monkeypatch)
    attention_lib._FALLBACKS_LOGGED.clear()
    with (caplog.at_level("WARNING", logger=attention_lib.__name__),
          attention_lib.record_choices() as choices):
        first = attention(q, k, v)
        again = attention(q, k, v)
    assert choices == {("xla", q.shape, k.shape, False): 2}  # recorded as the path really taken
    np.testing.assert_array_equal(np.asarray(first, np.float32), np.asarray(expected, np.float32))
    np.testing.assert_array_equal(np.asarray(again, np.float32), np.asarray(expected, np.float32))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cuDNN fused attention refused" in warnings[0], warnings
    assert "using the XLA path" in warnings[0]
    with pytest.raises(RuntimeError, match="cuDNN"):
        attention(q, k, v, implementation="cudnn")


def test_record_choices_counts_what_each_traced_call_took():
    """What the trainer logs for its first step: per (implementation, q, k, causal) the number of
    attention calls traced inside the block, fallbacks under the implementation really taken."""
    long_qkv = _inputs(1, 600, 600, 2, 8)[:3]
    short_qkv = _inputs(1, 64, 64, 2, 8)[:3]

    def three_calls(long_q, short_q):
        a = attention(long_q, long_q, long_q)
        b = attention(short_q, short_q, short_q, is_causal=True)
        c = attention(short_q, short_q, short_q, is_causal=True)
        return a.sum() + b.sum() + c.sum()

    with attention_lib.record_choices() as choices:
        jax.jit(three_calls).lower(long_qkv[0], short_qkv[0])
    assert choices == {("blocked", (1, 600, 2, 8), (1, 600, 2, 8), False): 1,
                       ("xla", (1, 64, 2, 8), (1, 64, 2, 8), True): 2}
    assert attention_lib.describe(choices) == (
        "attention as traced: blocked x 1 on q (1, 600, 2, 8) k (1, 600, 2, 8); "
        "xla x 2 on q (1, 64, 2, 8) k (1, 64, 2, 8) causal")
    attention(*short_qkv)  # outside the block: nothing more is counted
    assert sum(choices.values()) == 3


def test_bad_requests_are_refused_with_the_reason():
    q, k, v, _ = _inputs(1, 8, 8, 2, 4)
    with pytest.raises(ValueError, match="expected one of"):
        attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="expected one of"):
        with use_implementation("cudnn-ish"):
            pass
    with pytest.raises(ValueError, match="no mask"):
        attention(q, k, v, is_causal=True, implementation="blocked")
    with pytest.raises(ValueError, match="k/v heads"):
        attention(q, k[:, :, :1], v[:, :, :1], implementation="blocked")


def test_videomae_pretraining_gradients_equal_under_both_implementations():
    """Tiny VideoMAE at 16x64x64, patch 8: the decoder attends over 512 tokens, so 'auto' takes
    the blocked kernel; loss and every gradient equal the 'xla' model's."""
    s = videomae.SIZES["tiny"]
    model = videomae.VideoMAEPretrain(s, mask_ratio=0.75)
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.standard_normal((2, 16, 64, 64, 3)), jnp.float32)
    mask = np.zeros((2, 8, 64), bool)
    mask[:, :, rng.permutation(64)[:48]] = True
    mask = jnp.asarray(mask.reshape(2, 512))
    params = nn.meta.unbox(model.init(jax.random.key(0), video, mask))["params"]

    def loss_and_grads(implementation):
        def loss(p):
            return jnp.mean(model.apply({"params": p}, video, mask) ** 2)
        with use_implementation(implementation):
            assert _uses_blocked(loss, params) == (implementation == "auto")
            return jax.jit(jax.value_and_grad(loss))(params)

    (ref_loss, ref_grads), (loss, grads) = loss_and_grads("xla"), loss_and_grads("auto")
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    for path, ref in jax.tree_util.tree_leaves_with_path(ref_grads):
        ours = np.asarray(dict(jax.tree_util.tree_leaves_with_path(grads))[path])
        scale = np.abs(np.asarray(ref)).max() + 1e-12
        np.testing.assert_allclose(ours / scale, np.asarray(ref) / scale, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))


def test_tubelet_embed_of_a_subset_equals_gathering_the_full_embedding():
    embed = layers.TubeletEmbed(16, (2, 8, 8))
    rng = np.random.default_rng(1)
    video = jnp.asarray(rng.standard_normal((2, 4, 16, 24, 3)), jnp.float32)  # 2 x 2 x 3 tubelets
    idx = jnp.asarray([[0, 5, 7, 11], [3, 4, 9, 10]], jnp.int32)
    variables = embed.init(jax.random.key(0), video)
    full = embed.apply(variables, video)  # (2, 12, 16)
    subset = embed.apply(variables, video, idx)  # (2, 4, 16)
    np.testing.assert_allclose(np.asarray(subset),
                               np.take_along_axis(np.asarray(full), np.asarray(idx)[..., None], 1),
                               rtol=1e-6, atol=1e-6)


def test_gelu_is_the_exact_erf_formula():
    x = np.linspace(-8, 8, 1001).astype(np.float32)
    expected = np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in x.astype(np.float64)])
    np.testing.assert_allclose(np.asarray(layers.gelu(jnp.asarray(x))), expected, atol=1e-6,
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(layers.gelu(jnp.asarray(x))),
                               np.asarray(nn.gelu(jnp.asarray(x), approximate=False)), atol=1e-6)
