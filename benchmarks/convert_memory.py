r"""Peak host memory of importing a ViT-L-sized PyTorch checkpoint (issue: never more than ~2x the
checkpoint's size).

Writes a random official-layout VideoMAE ViT-L pretraining checkpoint (encoder + decoder, float32,
~1.3 GB; nothing is downloaded), then runs `python -m internvideo_jax.convert import` on it in a
fresh process and reads that process's peak resident set size (ru_maxrss of the child). The
baselines, measured in the same run: a process that only `torch.load`s the same file, and one
that only imports the libraries (its peak is subtracted to give the memory the import holds).

  pip install torch==2.13.0      # the converter's optional extra
  python benchmarks/convert_memory.py [--size L] [--keep DIR]
Prints JSON lines and a markdown row for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def write_checkpoint(path: str, size_name: str) -> int:
    """A random official VideoMAE pretraining .pth of the given size; returns its bytes."""
    import jax
    import numpy as np
    import torch
    from internvideo_jax.convert import videomae as cv
    from internvideo_jax.convert.__main__ import build_model, target_params
    from internvideo_jax.models.videomae import SIZES
    model = build_model("videomae_pretrain", SIZES[size_name], 0)
    shapes = target_params(model, 16, 224)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32) * 0.02, shapes)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v))
          for k, v in cv.export_official(params).items()}
    del params
    torch.save({"model": sd}, path)
    return os.path.getsize(path)


def child_peak_rss(cmd: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of running cmd as a child process."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    seconds = time.perf_counter() - start
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="L")
    p.add_argument("--keep", default="", help="directory to keep the files in (default: temp)")
    a = p.parse_args()
    root = a.keep or tempfile.mkdtemp(prefix="convert_memory_")
    src = os.path.join(root, f"videomae_{a.size}.pth")
    if not os.path.exists(src):
        write_checkpoint(src, a.size)
    nbytes = os.path.getsize(src)
    # Each measurement in its own child: RUSAGE_CHILDREN is the max over finished children, so
    # they run smallest first. `libraries`: the interpreter with torch, jax and orbax imported
    # and nothing loaded (what every importer pays before holding any weight).
    libraries, _ = child_peak_rss([sys.executable, "-c",
                                   "import torch, jax, orbax.checkpoint; jax.numpy.zeros(1)"])
    baseline, t_base = child_peak_rss([sys.executable, "-c", (
        "import torch, sys; sd = torch.load(sys.argv[1], map_location='cpu', "
        "weights_only=True); print(len(sd['model']))"), src])
    ours, t_ours = child_peak_rss([sys.executable, "-m", "internvideo_jax.convert", "import",
                                   "--src", src, "--model", "videomae_pretrain", "--size",
                                   a.size, "--out", os.path.join(root, "imported")])
    rows = [("torch.load only (baseline)", baseline, t_base), ("convert import", ours, t_ours)]
    for name, rss, t in rows:
        print(json.dumps({"what": name, "checkpoint_bytes": nbytes, "peak_rss_bytes": rss,
                          "ratio": round(rss / nbytes, 2),
                          "held_ratio": round((rss - libraries) / nbytes, 2),
                          "seconds": round(t, 1)}))
    print(f"| {time.strftime('%Y-%m-%d')} | {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores | VideoMAE {a.size} pretrain .pth, {nbytes / 2**30:.2f} GiB | "
          f"peak RSS: import {ours / 2**30:.2f} GiB ({ours / nbytes:.2f}x), torch.load alone "
          f"{baseline / 2**30:.2f} GiB ({baseline / nbytes:.2f}x); libraries alone "
          f"{libraries / 2**30:.2f} GiB, so the import holds "
          f"{(ours - libraries) / nbytes:.2f}x the checkpoint |")


if __name__ == "__main__":
    main()
