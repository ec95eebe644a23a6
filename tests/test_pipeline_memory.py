"""Worker memory stays flat over thousands of decoded clips (PyAV / decoder leaks would show)."""
import os

import pytest

from tests.helpers import tiny_config


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_worker_rss_does_not_grow_over_thousands_of_clips(data_dir):
    from internvideo_jax.tasks import get_task
    c = tiny_config(data_dir, **{"data.num_workers": 2})
    ds, _ = get_task(c).train_dataset(seed=0, local_batch=16, process_index=0, process_count=1)
    it = iter(ds)
    samples = []
    for batch_index in range(1, 251):  # 250 batches x 16 = 4000 clips
        next(it)
        if batch_index in (60, 250):
            workers = [p for p in _children(os.getpid()) if _rss_mb(p) > 50]
            samples.append(sum(_rss_mb(p) for p in workers))
    print(f"worker RSS after 960 clips: {samples[0]:.0f} MB, after 4000 clips: {samples[1]:.0f} MB")
    # Growth after warm-up: buffers and converter caches are allocated by then; a per-clip leak of
    # even 25 KB (one 64x64 RGB clip is 196 KB) would add > 75 MB over the 3040 clips.
    assert samples[1] - samples[0] < 75
    it.close()
