r"""How a TPU compiler reduces an FSDP-sharded kernel's gradient, by the kernel's shape.

Under FSDP a weight sharded over 'fsdp' along its input ('embed') dimension should have its
gradient reduce-scattered: each chip receives only its slice, (n-1)/n of the bytes on a ring. This
compiles, for a TPU topology on this CPU-only host (libtpu's compiler, no TPU), the gradient of
one projection x @ W in bf16 with W in f32 sharded along 'embed', for the kernel layouts our
attention uses, (embed, 3, heads, head_dim) and (embed, heads, head_dim), at head dims 64
(ViT-S/B/L), 80 (InternVideo's ViT-H) and 128, next to a plain 2-D (embed, out) kernel, and
reports which collective the compiled gradient uses and the layout the compiler gave it.

  pip install libtpu==0.0.52
  python benchmarks/tpu_fsdp_gradients.py [--topology v5p:2x2x1]
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from internvideo_jax import plan  # noqa: E402
from internvideo_jax.infra import collectives

EMBED, TOKENS, BATCH = 1280, 157, 32  # ViT-H's width, a pretraining step's visible tokens

KERNELS = {  # name: (kernel shape, einsum of x (B, N, D) with the kernel)
    "2-D (embed, 3*embed)": ((EMBED, 3 * EMBED), "bnd,de->bne"),
    **{f"qkv (embed, 3, heads, {hd})": ((EMBED, 3, EMBED // hd, hd), "bnd,dthk->bnthk")
       for hd in (64, 80, 128)},
    **{f"q (embed, heads, {hd})": ((EMBED, EMBED // hd, hd), "bnd,dhk->bnhk")
       for hd in (64, 80, 128)},
}


def gradient_collectives(mesh: Mesh, shape: tuple, equation: str) -> tuple[list[dict], str]:
    """Census rows of d/dW sum(x @ W) and the layout of W's gradient in the compiled module."""
    def sharded(*spec):
        return NamedSharding(mesh, P(*spec))
    w = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharded("fsdp"))
    x = jax.ShapeDtypeStruct((BATCH, TOKENS, EMBED), jnp.bfloat16, sharding=sharded("fsdp"))
    grad = jax.jit(jax.grad(lambda w, x: jnp.einsum(equation, x, w.astype(jnp.bfloat16))
                            .astype(jnp.float32).sum()), out_shardings=sharded("fsdp"))
    _, hlo = plan.compile_with_hlo(grad.lower(w, x))
    layout = re.search(r"entry_computation_layout=\{.*?->\s*[a-z0-9]+\[[0-9,]*\]\{([^}]*)\}", hlo)
    rows = [r for r in collectives.census(hlo, {"fsdp": len(mesh.devices)})
            if r["dtype"] in ("bf16", "f32")]  # the gradient's, not index shuffles
    return rows, layout.group(1) if layout else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", default="v5p:2x2x1")
    a = p.parse_args()
    devices = plan.topology_devices(a.topology)
    mesh = Mesh(np.array(devices), ("fsdp",))
    print(f"{a.topology}: {len(devices)} chips, FSDP over all; x ({BATCH}, {TOKENS}, {EMBED}) bf16")
    print("| kernel | gradient's collective | full MiB | ring MiB per chip | gradient layout |")
    print("|---|---|---|---|---|")
    for name, (shape, equation) in KERNELS.items():
        rows, layout = gradient_collectives(mesh, shape, equation)
        kinds = ", ".join(f"{r['kind']} {r['dtype']}" for r in rows) or "none"
        full = sum(r["full_bytes"] for r in rows) / 2**20
        ring = sum(r["ring_bytes"] for r in rows) / 2**20
        print(f"| {name} | {kinds} | {full:.1f} | {ring:.1f} | {{{layout}}} |")


if __name__ == "__main__":
    main()
