"""Scaled dot-product attention: the one entry point every model calls.

attention(q (B, Nq, h, hd), k (B, Nk, h_kv, hd), v (B, Nk, h_kv, hd), mask=None, is_causal=False)
-> (B, Nq, h, hd), softmax(q k^T / sqrt(hd)) v, with the semantics of jax.nn.dot_product_attention.

Three implementations:
  'xla':     jax.nn.dot_product_attention's XLA path (on TPU and GPU, XLA's fusions): it
             materialises the (B, h, Nq, Nk) logits and keeps the probabilities for the backward.
  'cudnn':   jax.nn.dot_product_attention(implementation='cudnn'): cuDNN's fused flash-attention
             kernel on an NVIDIA GPU, forward and backward, for bf16/fp16 inputs with a head dim
             that is a multiple of 8 (at most 128; 256 on Hopper). JAX's own default
             (implementation=None) is the XLA path, not this one, so it must be asked for.
  'blocked': a flash-style kernel in plain JAX for the CPU: one (batch, head) at a time, queries in
             blocks of at most BLOCK rows, log-sum-exp kept, and the backward pass recomputes each
             block's probabilities instead of storing them. Each head's K and V stay in cache; on a
             2-core x86 host it runs the fwd+bwd of VideoMAE's decoder attention (1,568 tokens)
             about 1.8x faster than 'xla' (benchmarks/attention.py, docs/benchmarks.md). It loops
             over batch x heads, so it is for unsharded CPU runs, not for a mesh.
'auto' (the default) takes
  'cudnn'    on the GPU backend for unmasked bf16/fp16 attention with a head dim that is a multiple
             of 8 up to 128; where cuDNN then refuses it at trace time (no cuDNN, an old version, a
             ROCm GPU, an unsupported shape) it logs the reason once and takes 'xla';
  'blocked'  on the CPU backend outside a mesh of several devices, for long unmasked sequences
             (Nk >= BLOCKED_MIN_KEYS) with as many k/v heads as query heads;
  'xla'      everywhere else.
An explicit 'cudnn' has no fallback: cuDNN's refusal is raised.
`with attention.use_implementation('xla'):` overrides 'auto' for whatever is traced inside it (it
acts at trace time: jit the function inside the block), e.g. to measure one against the other.
`with attention.record_choices() as choices:` counts what every call traced inside it took
(`describe(choices)` for a log line; the trainer logs it for its first step).
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import logging

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "blocked", "cudnn")
BLOCK = 512  # largest query block of the blocked kernel (rows); measured best 392-784 at 1,568
BLOCKED_MIN_KEYS = 256  # below this the logits fit in cache and 'xla' is as fast
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)  # cuDNN's fused attention takes no float32
CUDNN_MAX_HEAD_DIM = 128  # every GPU generation's limit (Hopper's is 256)
_CHOSEN = contextvars.ContextVar("attention_implementation", default="auto")
_FALLBACKS_LOGGED: set[str] = set()
_RECORD = contextvars.ContextVar("attention_record", default=None)


def _check(implementation: str) -> str:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}: expected one of "
                         f"{IMPLEMENTATIONS}")
    return implementation


@contextlib.contextmanager
def record_choices():
    """Within the block, each attention() call traced adds one to the yielded Counter under
    (implementation taken, q shape, k shape, causal): what 'auto' chose, fallbacks included."""
    choices = collections.Counter()
    token = _RECORD.set(choices)
    try:
        yield choices
    finally:
        _RECORD.reset(token)


def describe(choices: collections.Counter) -> str:
    """One log line: 'attention as traced: cudnn x 12 on q (32, 1568, 6, 64) k (...); ...'."""
    if not choices:
        return "attention as traced: no attention calls"
    parts = [f"{impl} x {n} on q {q} k {k}{' causal' if causal else ''}"
             for (impl, q, k, causal), n in sorted(choices.items(), key=str)]
    return "attention as traced: " + "; ".join(parts)


@contextlib.contextmanager
def use_implementation(implementation: str):
    """Within the block, attention() without an explicit implementation uses this one."""
    token = _CHOSEN.set(_check(implementation))
    try:
        yield
    finally:
        _CHOSEN.reset(token)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
              is_causal: bool = False, implementation: str | None = None) -> jax.Array:
    """(B, Nq, h, hd) attention output; see the module docstring for the implementations.

    implementation None: the one chosen by use_implementation(), 'auto' outside any.
    """
    implementation = _check(_CHOSEN.get() if implementation is None else implementation)
    automatic = implementation == "auto"
    if automatic:
        implementation = _auto(q, k, mask, is_causal)
    out = None
    if implementation == "cudnn":
        try:
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                                               implementation="cudnn")
        except (RuntimeError, NotImplementedError, ValueError) as refusal:
            if not automatic:
                raise
            _log_fallback(f"cuDNN fused attention refused q {q.shape} {q.dtype}, k {k.shape} "
                          f"({type(refusal).__name__}: {refusal}); using the XLA path")
            implementation = "xla"
    if implementation == "blocked":
        if mask is not None or is_causal or k.shape[2] != q.shape[2]:
            raise ValueError("the blocked attention kernel takes no mask, no causal flag and as "
                             f"many k/v heads as query heads (q {q.shape}, k {k.shape}); use "
                             "implementation='xla'")
        out = blocked_attention(q, k, v)
    if out is None:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
    record = _RECORD.get()
    if record is not None:
        record[(implementation, tuple(q.shape), tuple(k.shape), is_causal)] += 1
    return out


def _auto(q, k, mask, is_causal) -> str:
    backend = jax.default_backend()
    if backend == "gpu":
        head_dim = q.shape[-1]
        half = q.dtype in CUDNN_DTYPES and k.dtype == q.dtype
        fits = head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM
        return "cudnn" if mask is None and half and fits else "xla"
    mesh = jax.sharding.get_abstract_mesh()
    on_cpu = backend == "cpu" and (mesh.empty or mesh.size == 1)
    plain = mask is None and not is_causal and k.shape[2] == q.shape[2]
    return "blocked" if on_cpu and plain and k.shape[1] >= BLOCKED_MIN_KEYS else "xla"


def _log_fallback(message: str) -> None:
    """Warn once per distinct message (attention is traced once per layer and shape)."""
    if message not in _FALLBACKS_LOGGED:
        _FALLBACKS_LOGGED.add(message)
        logging.getLogger(__name__).warning(message)


def _query_blocks(nq: int) -> tuple[int, int]:
    """(number of blocks, rows per block): equal blocks of at most BLOCK rows covering nq."""
    count = -(-nq // BLOCK)
    return count, -(-nq // count)


def _heads_first(x: jax.Array) -> jax.Array:
    """(B, N, h, hd) -> (B*h, N, hd)."""
    b, n, h, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b * h, n, hd)


def _heads_back(x: jax.Array, b: int, h: int) -> jax.Array:
    """(B*h, N, hd) -> (B, N, h, hd)."""
    return x.reshape(b, h, x.shape[1], x.shape[2]).transpose(0, 2, 1, 3)


def _pad_queries(x: jax.Array, rows: int) -> jax.Array:
    """(BH, Nq, ...) zero-padded to (BH, rows, ...)."""
    return jnp.pad(x, [(0, 0), (0, rows - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


@jax.custom_vjp
def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(hd)) v, computed block by block; (B, Nq, h, hd) -> (B, Nq, h, hd)."""
    return _blocked_fwd(q, k, v)[0]


def _blocked_fwd(q, k, v):
    b, nq, h, hd = q.shape
    count, rows = _query_blocks(nq)
    scale = hd ** -0.5
    qs = _split_blocks(_heads_first(q), count, rows)  # (BH, count, rows, hd)

    def one_head(args):
        q_head, k_head, v_head = args  # (count, rows, hd), (Nk, hd), (Nk, hd)

        def one_block(q_block):  # (rows, hd)
            logits = jnp.matmul(q_block * scale, k_head.T,
                                preferred_element_type=jnp.float32)  # (rows, Nk)
            peak = logits.max(-1, keepdims=True)
            probs = jnp.exp(logits - peak)
            total = probs.sum(-1, keepdims=True)
            out = jnp.matmul(probs.astype(v_head.dtype), v_head,
                             preferred_element_type=jnp.float32) / total  # (rows, hd)
            return out.astype(q.dtype), (peak + jnp.log(total))[:, 0]  # lse (rows,) float32

        return jax.lax.map(one_block, q_head)

    out, lse = jax.lax.map(one_head, (qs, _heads_first(k), _heads_first(v)))
    out = out.reshape(b * h, count * rows, hd)[:, :nq]  # (BH, Nq, hd)
    lse = lse.reshape(b * h, count * rows)  # (BH, count*rows) float32, padded rows included
    return _heads_back(out, b, h), (q, k, v, out, lse)


def _blocked_bwd(residuals, d_out):
    q, k, v, out, lse = residuals  # out (BH, Nq, hd) heads-first
    b, nq, h, hd = q.shape
    count, rows = _query_blocks(nq)
    scale = hd ** -0.5
    d_out = _heads_first(d_out)  # (BH, Nq, hd)
    # Padded query rows have d_out = 0 and delta = 0, so they add nothing to dK, dV.
    delta = jnp.sum(out.astype(jnp.float32) * d_out.astype(jnp.float32), -1)  # (BH, Nq)
    split = functools.partial(_split_blocks, count=count, rows=rows)

    def one_head(args):
        q_head, k_head, v_head, do_head, lse_head, delta_head = args

        def one_block(carry, block):
            dk, dv = carry  # (Nk, hd) float32
            q_block, do_block, lse_block, delta_block = block
            q_block = q_block * scale
            logits = jnp.matmul(q_block, k_head.T, preferred_element_type=jnp.float32)
            probs = jnp.exp(logits - lse_block[:, None])  # (rows, Nk)
            dv = dv + jnp.matmul(probs.T.astype(do_block.dtype), do_block,
                                 preferred_element_type=jnp.float32)
            d_probs = jnp.matmul(do_block, v_head.T, preferred_element_type=jnp.float32)
            d_logits = (probs * (d_probs - delta_block[:, None])).astype(q_block.dtype)
            dq = jnp.matmul(d_logits, k_head, preferred_element_type=jnp.float32) * scale
            dk = dk + jnp.matmul(d_logits.T, q_block, preferred_element_type=jnp.float32)
            return (dk, dv), dq

        zeros = jnp.zeros(k_head.shape, jnp.float32)
        (dk, dv), dq = jax.lax.scan(one_block, (zeros, zeros),
                                    (q_head, do_head, lse_head, delta_head))
        return dq.reshape(count * rows, hd), dk, dv

    dq, dk, dv = jax.lax.map(one_head, (split(_heads_first(q)), _heads_first(k), _heads_first(v),
                                        split(d_out), lse.reshape(b * h, count, rows),
                                        split(delta)))
    return (_heads_back(dq[:, :nq], b, h).astype(q.dtype), _heads_back(dk, b, h).astype(k.dtype),
            _heads_back(dv, b, h).astype(v.dtype))


def _split_blocks(x: jax.Array, count: int, rows: int) -> jax.Array:
    """(BH, Nq, ...) -> (BH, count, rows, ...), zero-padding the last block."""
    x = _pad_queries(x, count * rows)
    return x.reshape((x.shape[0], count, rows) + x.shape[2:])


blocked_attention.defvjp(_blocked_fwd, _blocked_bwd)
