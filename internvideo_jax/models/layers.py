"""Shared transformer layers: attention, MLP, drop path, tubelet patch embed, sinusoid tables,
the Transformer stack (VideoMAE), remat policies and scan_blocks (nn.scan over layers).
Converting parameter trees between the per-layer and scanned layouts is models/layout.py.

Every parameter carries logical axis names (see internvideo_jax/infra/sharding.py for the one table that
maps them onto the ('data', 'fsdp', 'tensor') mesh) and large activations carry logical constraints.
Logical names used here:
  params:      'embed' (model width), 'heads', 'kv' (head dim), 'mlp' (MLP hidden), 'qkv' (the 3 of
               a fused q/k/v projection), 'patch' (flattened pixels of one patch)
  activations: 'act_batch', 'act_length' (tokens), 'act_embed', 'act_heads', 'act_mlp'
Layouts are channel-last: video (B, T, H, W, C), tokens (B, N, D).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvideo_jax.models import naming
from internvideo_jax.models.attention import attention
# re-exported for the tests: the layout conversions (models/layout.py) and the naming rule's
# constants (models/naming.py: SCANNED, 'blocks', is VideoMAE's stack; STACKS, every stack name)
from internvideo_jax.models.layout import is_scanned, stack_layers, unstack_layers  # noqa: F401
from internvideo_jax.models.naming import SCANNED, STACKS  # noqa: F401

Dtype = Any
Initializer = Callable[..., jax.Array]

# The reference (timm / VideoMAE `_init_weights`) initialises every Linear with xavier_uniform and
# zero bias, LayerNorm with ones/zeros.
xavier_uniform = nn.initializers.xavier_uniform
zeros = nn.initializers.zeros_init()
ones = nn.initializers.ones_init()


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh/rules context)."""
    return nn.with_logical_constraint(x, names)


def sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
    """The fixed 1-D sinusoid position table of VideoMAE, shape (num_positions, dim), float32.

    angle(pos, j) = pos / 10000^(2 * (j // 2) / dim); sin on even j, cos on odd j.
    """
    pos = np.arange(num_positions, dtype=np.float64)[:, None]  # (N, 1)
    j = np.arange(dim)[None, :]  # (1, D)
    angle = pos / np.power(10000.0, 2 * (j // 2) / dim)  # (N, D)
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def patchify(video: jax.Array, patch: tuple[int, int, int]) -> jax.Array:
    """Cut a video into tubelet patches.

    Args:
      video: (B, T, H, W, C).
      patch: (pt, ph, pw), dividing T, H and W.
    Returns:
      (B, (T/pt)*(H/ph)*(W/pw), pt*ph*pw, C): tokens in (t, h, w) order with t slowest; pixels of a
      patch in (pt, ph, pw) order. This is the token order of the reference Conv3d patch embed and the
      pixel order of its reconstruction target (`b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c`).
    """
    b, t, h, w, c = video.shape
    pt, ph, pw = patch
    x = video.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # (B, T', H', W', pt, ph, pw, C)
    return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw, c)


class DropPath(nn.Module):
    """Stochastic depth per sample: zero the whole residual branch with probability `rate`."""

    rate: float  # 0: off; under scanned layers the per-layer rate comes as `rate` instead

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool, rate: jax.Array | None = None
                 ) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - (self.rate if rate is None else rate)
        rng = self.make_rng("dropout")
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(rng, keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class TubeletEmbed(nn.Module):
    """Conv3d(C -> D, kernel = stride = patch) with bias, as patchify + one matmul.

    kernel is stored as (pt, ph, pw, C, D): the PyTorch Conv3d weight [D, C, pt, ph, pw] transposed.
    Input (B, T, H, W, C) -> output (B, N, D) with N = (T/pt)(H/ph)(W/pw) in (t, h, w) order.
    The embedding is per tubelet, so embedding a subset equals embedding all and then gathering.
    """

    dim: int
    patch: tuple[int, int, int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, token_idx: jax.Array | None = None) -> jax.Array:
        """token_idx (B, K): embed only those tubelets (the encoder's visible tokens) -> (B, K, D)."""
        c = video.shape[-1]
        pt, ph, pw = self.patch
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4),
                (None, None, None, None, "embed")),
            (pt, ph, pw, c, self.dim), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(zeros, ("embed",)), (self.dim,),
                          jnp.float32)
        x = patchify(video.astype(self.dtype), self.patch)  # (B, N, pt*ph*pw, C)
        if token_idx is not None:
            x = jnp.take_along_axis(x, token_idx[:, :, None, None], axis=1)  # (B, K, pt*ph*pw, C)
        x = x.reshape(*x.shape[:2], pt, ph, pw, c)  # (B, N, pt, ph, pw, C)
        x = jnp.einsum("bnpqrc,pqrcd->bnd", x, kernel.astype(self.dtype))  # (B, N, D)
        return x + bias.astype(self.dtype)


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU as PyTorch's nn.GELU(): 0.5 x (1 + erf(x / sqrt 2)).

    Same function as flax's nn.gelu(approximate=False), which goes through erfc; erf is cheaper on
    the CPU (about 2.3x in the forward pass) and is the formula of the reference models.
    """
    return 0.5 * x * (1 + jax.lax.erf(x * np.asarray(0.5 ** 0.5, x.dtype)))


def flat_xavier_uniform(num_in_dims: int) -> Initializer:
    """xavier_uniform over the kernel flattened to 2-D (inputs, outputs), then reshaped.

    A PyTorch Linear [out, in] split into (in, heads, head_dim) keeps the reference's fans this way.
    """

    def init(rng, shape, dtype=jnp.float32):
        fan_in = int(np.prod(shape[:num_in_dims]))
        flat = xavier_uniform()(rng, (fan_in, int(np.prod(shape[num_in_dims:]))), dtype)
        return flat.reshape(shape)

    return init


class Projection(nn.Module):
    """A linear map contracting the last `len(in_names)` axes into `out_shape`.

    kernel (*in_shape, *out_shape) with logical names in_names + out_names; bias (*out_shape).
    """

    out_shape: tuple[int, ...]
    in_names: tuple[str | None, ...]
    out_names: tuple[str | None, ...]
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Initializer | None = None  # default: xavier uniform over the flattened axes

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_names)
        in_shape = x.shape[-n_in:]
        init = self.kernel_init or flat_xavier_uniform(n_in)
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(init, self.in_names + self.out_names),
            in_shape + tuple(self.out_shape), jnp.float32)
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                                ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))),
                                 ((), ())))
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(zeros, self.out_names),
                              tuple(self.out_shape), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class MultiHeadSelfAttention(nn.Module):
    """VideoMAE/BEiT attention: qkv without bias plus separate q_bias and v_bias (k has none).

    qkv kernel (D, 3, heads, head_dim) == the PyTorch qkv.weight [3D, D] transposed and split;
    q_bias, v_bias (heads, head_dim); proj (heads, head_dim, D) with bias. q is scaled by
    head_dim^-0.5 (inside models/attention.py).
    """

    num_heads: int
    qkv_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        head_dim = d // self.num_heads
        qkv = Projection((3, self.num_heads, head_dim), ("embed",), ("qkv", "heads", "kv"),
                         use_bias=False, dtype=self.dtype, name="qkv")(x)  # (B, N, 3, h, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, N, heads, head_dim)
        if self.qkv_bias:
            bias_init = nn.with_logical_partitioning(zeros, ("heads", "kv"))
            q_bias = self.param("q_bias", bias_init, (self.num_heads, head_dim), jnp.float32)
            v_bias = self.param("v_bias", bias_init, (self.num_heads, head_dim), jnp.float32)
            q = q + q_bias.astype(self.dtype)
            v = v + v_bias.astype(self.dtype)
        q = constrain(q, "act_batch", "act_length", "act_heads", None)
        k = constrain(k, "act_batch", "act_length", "act_heads", None)
        v = constrain(v, "act_batch", "act_length", "act_heads", None)
        out = attention(q, k, v)  # (B, N, heads, head_dim)
        out = constrain(out, "act_batch", "act_length", "act_heads", None)
        return Projection((d,), ("heads", "kv"), ("embed",), dtype=self.dtype,
                          name="proj")(out)  # (B, N, D)


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    hidden_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        h = nn.Dense(
            self.hidden_dim, dtype=self.dtype, name="fc1",
            kernel_init=nn.with_logical_partitioning(xavier_uniform(), ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(zeros, ("mlp",)))(x)  # (B, N, hidden)
        h = constrain(h, "act_batch", "act_length", "act_mlp")
        h = gelu(h)
        return nn.Dense(
            d, dtype=self.dtype, name="fc2",
            kernel_init=nn.with_logical_partitioning(xavier_uniform(), ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(zeros, ("embed",)))(h)  # (B, N, D)


def layer_norm(eps: float, name: str, dtype: Dtype = jnp.float32) -> nn.LayerNorm:
    """LayerNorm with logically-partitioned scale/bias; statistics always computed in float32."""
    return nn.LayerNorm(
        epsilon=eps, dtype=dtype, name=name,
        scale_init=nn.with_logical_partitioning(ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(zeros, ("embed",)))


class Block(nn.Module):
    """Pre-LN transformer block: x + drop_path(attn(norm1 x)); x + drop_path(mlp(norm2 x)).

    Layer scale (gamma_1, gamma_2) exists only when init_values > 0 (released VideoMAE: 0).
    """

    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    init_values: float = 0.0
    norm_eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True,
                 drop_rate: jax.Array | None = None) -> jax.Array:
        """drop_rate: this layer's drop-path rate when it is traced (scanned layers)."""
        drop = DropPath(self.drop_path)
        y = MultiHeadSelfAttention(self.num_heads, dtype=self.dtype, name="attn")(
            layer_norm(self.norm_eps, "norm1", self.dtype)(x))
        x = x + drop(self._layer_scale(y, "gamma_1"), deterministic, drop_rate)
        x = constrain(x, "act_batch", "act_length", "act_embed")
        y = Mlp(self.mlp_dim, dtype=self.dtype, name="mlp")(
            layer_norm(self.norm_eps, "norm2", self.dtype)(x))
        x = x + drop(self._layer_scale(y, "gamma_2"), deterministic, drop_rate)
        return constrain(x, "act_batch", "act_length", "act_embed")

    def _layer_scale(self, y: jax.Array, name: str) -> jax.Array:
        if self.init_values <= 0:
            return y
        gamma = self.param(
            name, nn.with_logical_partitioning(nn.initializers.constant(self.init_values),
                                               ("embed",)), (y.shape[-1],), jnp.float32)
        return y * gamma.astype(y.dtype)


# Rematerialisation policies by name: what a block keeps from its forward pass for the backward.
REMAT_POLICIES = {
    "none": None,  # keep everything (no recomputation)
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the block's input
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep matmul outputs, recompute the rest
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # weights' matmuls
}


def remat_block(remat: str, block: type | None = None, static_argnums: tuple[int, ...] = (2,)):
    """`block` (a module class; default Block), or the same under jax.checkpoint with the named
    policy (REMAT_POLICIES). static_argnums: its __call__'s Python-value arguments, self counted
    as 0; the default fits blocks called as (x, deterministic)."""
    block = Block if block is None else block
    if remat not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat policy {remat!r}; choose one of {sorted(REMAT_POLICIES)}.")
    if remat == "none":
        return block
    return nn.remat(block, policy=REMAT_POLICIES[remat], static_argnums=static_argnums)


class Transformer(nn.Module):
    """A stack of `depth` Blocks with drop path linearly spaced 0..drop_path_rate over depth.

    remat: a REMAT_POLICIES name; parameters and outputs are the same for every policy, only
    the memory/compute trade of the backward pass changes.
    scan: one Block traced once and run `depth` times by nn.scan (compile time independent of
    depth); parameters stacked under 'blocks' with a leading 'layers' axis instead of blocks_0..
    blocks_{depth-1} (models/layout.py's stack_layers / unstack_layers convert between the two
    layouts; the naming rule: models/naming.py).
    keep: layer indices whose outputs are also returned: -> (x, (len(keep), B, N, D)) instead of
    x (the UMT student regresses its last layers)."""

    depth: int
    num_heads: int
    mlp_dim: int
    drop_path_rate: float = 0.0
    init_values: float = 0.0
    norm_eps: float = 1e-6
    dtype: Dtype = jnp.float32
    remat: str = "none"
    scan: bool = False
    keep: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True):
        rates = np.linspace(0.0, self.drop_path_rate, self.depth) if self.depth else []
        block = remat_block(self.remat)
        common = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                      init_values=self.init_values, norm_eps=self.norm_eps, dtype=self.dtype)
        if self.scan and self.depth:
            x, kept = scan_blocks(block, dict(common, drop_path=float(self.drop_path_rate)), x,
                                  rates, deterministic, SCANNED, keep=self.keep)
            return (x, kept) if self.keep else x
        kept = []
        for i in range(self.depth):
            x = block(**common, drop_path=float(rates[i]), name=naming.layer_name(SCANNED, i))(
                x, deterministic)
            if i in self.keep:
                kept.append(x)
        return (x, jnp.stack(kept)) if self.keep else x


def scan_blocks(block: Any, block_kwargs: dict, x: jax.Array, rates, deterministic: bool,
                name: str, keep: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array | None]:
    """len(rates) layers of `block(**block_kwargs)` as one nn.scan named `name` (call it from a
    compact method): traced once whatever the depth, parameters (and BatchNorm statistics)
    stacked on a leading 'layers' axis. Layer i runs as block(x, deterministic, rates[i]): its
    drop-path rate comes in traced (block_kwargs' drop_path is the largest, a switch).

    keep: layer indices whose outputs are also wanted -> (x, kept (len(keep), *x.shape), kept[j]
    the output of layer keep[j]) (kept is None without keep). They are gathered into a carried
    buffer, one dynamic update per layer, not stacked for every layer."""
    depth = len(rates)
    slots = np.full(depth, -1, np.int32)
    for j, i in enumerate(keep):
        if not 0 <= i < depth:
            raise ValueError(f"scan_blocks: keep={keep} names layer {i} of {depth}")
        slots[i] = j
    scanned = nn.scan(_ScanStep, variable_axes={"params": 0, "batch_stats": 0},
                      split_rngs={"params": True, "dropout": True}, in_axes=0, length=depth,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    kept = jnp.zeros((len(keep),) + x.shape, x.dtype) if keep else None
    (x, kept), _ = scanned(block, tuple(sorted(block_kwargs.items())), deterministic,
                           name=name)((x, kept), (jnp.asarray(rates, jnp.float32),
                                                  jnp.asarray(slots)))
    return x, kept


class _ScanStep(nn.Module):
    """One scanned layer: ((x, kept), (drop-path rate, slot in kept or -1)) -> ((x, kept), None)."""

    block: Any
    block_kwargs: tuple  # sorted (name, value) pairs
    deterministic: bool

    @nn.compact
    def __call__(self, carry, layer):
        x, kept = carry
        rate, slot = layer
        x = self.block(**dict(self.block_kwargs), name=naming.SCAN_BLOCK)(x, self.deterministic,
                                                                     rate)
        if kept is not None:
            at = jnp.maximum(slot, 0)
            current = jax.lax.dynamic_index_in_dim(kept, at, 0, keepdims=False)
            kept = jax.lax.dynamic_update_index_in_dim(kept, jnp.where(slot >= 0, x, current),
                                                       at, 0)
        return (x, kept), None
