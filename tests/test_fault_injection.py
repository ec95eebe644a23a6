"""kill -9 at the moments a crash or a preemption hits, then the same command again: the run
resumes and its losses are those of an uninterrupted run; no worker process outlives the kill.

Slow (each case is two training processes): run with `-m slow`, as CI does.
"""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from internvideo_jax.training.metrics_writer import read_metrics
from tests.helpers import REPO

STEPS, EVERY = 12, 4


def _command(data_dir: str, workdir: str) -> list[str]:
    return [sys.executable, "-m", "internvideo_jax.main",
            "--config", "experiments/videomae_pretrain.py:tiny", "--workdir", workdir,
            "--config.data.dataset=demo/small", f"--config.data.data_dir={data_dir}",
            "--config.batch_size=8", f"--config.total_steps={STEPS}",
            f"--config.checkpoint_every={EVERY}", "--config.log_every=1",
            "--config.optim.warmup_epochs=0.3", "--config.data.num_workers=2"]


def _losses(workdir: str) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def _children(pid: int) -> set[int]:
    """Every descendant of pid (from /proc)."""
    parents = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
            parents[int(stat.split("/")[2])] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _logged_steps(workdir: str) -> int:
    try:
        return max([r["step"] for r in read_metrics(workdir) if "loss" in r], default=0)
    except (OSError, ValueError):
        return 0


def _saving(workdir: str, step: int) -> bool:
    return bool(glob.glob(os.path.join(workdir, "checkpoints", f"{step}.orbax-checkpoint-tmp*")))


# When to kill: a predicate on the workdir, polled every 5 ms.
MOMENTS = {
    "compile": lambda w: os.path.exists(os.path.join(w, "config.json")),  # state made, compiling
    "mid_run": lambda w: _logged_steps(w) >= 6,  # after checkpoint 4, before 8
    "during_save": lambda w: _saving(w, 8),
    "final_save": lambda w: _saving(w, STEPS),
}


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    subprocess.run(_command(data_dir, workdir), cwd=REPO, check=True, timeout=900,
                   capture_output=True)
    return _losses(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_then_resume_gives_the_uninterrupted_losses(moment, reference, data_dir,
                                                           tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(_command(data_dir, workdir), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    children: set[int] = set()
    polls = 0
    while not MOMENTS[moment](workdir):  # every 5 ms: a tiny model's save lasts ~0.1 s
        assert proc.poll() is None, f"the run ended before the {moment} moment"
        assert time.time() < deadline
        if polls % 40 == 0:  # the /proc scan is slower: every 0.2 s
            children |= _children(proc.pid)
        polls += 1
        time.sleep(0.005)
    children |= _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Worker processes and helpers exit with their parent.
    gone_by = time.time() + 10
    while any(_alive(c) for c in children) and time.time() < gone_by:
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], f"left behind after kill -9 at {moment}"
    # The same command again: it resumes (or starts over) and finishes.
    subprocess.run(_command(data_dir, workdir), cwd=REPO, check=True, timeout=900,
                   capture_output=True)
    got = _losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))  # every step once
    assert got == reference, moment
