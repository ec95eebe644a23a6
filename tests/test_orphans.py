"""Input worker processes die with the training process (issue 19, item 2).

A process that builds the pretraining pipeline with 2 grain workers is killed with SIGKILL; its
workers and multiprocessing's resource_tracker must not live on (reparented to PID 1, ~300 MB
each), as they did before input_pipelines/workers.py.
"""
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO

# The run being killed: first batch, a get_state/set_state round trip (grain's prefetch threads
# that started the workers exit there while the workers carry on: they must survive it), then
# its pid and all its descendants' pids, then it waits to be killed.
_CHILD = r"""
import os, sys, time
from absl import flags
flags.FLAGS.mark_as_parsed()
from input_pipelines import builders
from tests.helpers import tiny_config
from tests.test_orphans import descendants
c = tiny_config(sys.argv[1], **{"data.num_workers": 2})
ds, _ = builders.pretrain_dataset(c.data, seed=0, local_batch=4, token_grid=(8, 8, 8),
                                  mask_ratio=0.9)
it = iter(ds)
next(it)
state = it.get_state()
next(it)
it.set_state(state)
next(it)
time.sleep(1.0)  # a worker that the round trip killed would be gone by now
next(it)
print("PIDS", os.getpid(), *descendants(os.getpid()), flush=True)
time.sleep(600)
"""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a live process, None if there is none (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else (fields[0], int(fields[1]))


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_pids(proc: subprocess.Popen, timeout: float) -> list[int]:
    deadline, buf = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n")[:-1]:  # complete lines
                if line.startswith(b"PIDS "):
                    return [int(x) for x in line.split()[1:]]
        elif proc.poll() is not None:
            break
    raise AssertionError(f"the pipeline process gave no pids (exit code {proc.poll()}); "
                         f"output: {buf[-3000:].decode(errors='replace')}")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads Linux /proc")
def test_workers_and_resource_tracker_exit_after_kill_9(data_dir):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, data_dir], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kids: list[int] = []
    commands: dict[int, str] = {}
    try:
        pid, *kids = _read_pids(proc, timeout=240)
        assert pid == proc.pid
        commands = {k: _cmdline(k) for k in kids}
        workers = [k for k, c in commands.items() if "spawn_main" in c]
        assert len(workers) == 2, commands  # both workers survived the set_state round trip
        assert any("resource_tracker" in c for c in commands.values()), commands
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        alive = kids
        while alive and time.monotonic() - start < 10:
            time.sleep(0.02)
            alive = [k for k in alive if _stat(k) is not None]
        took = time.monotonic() - start
        print(f"after kill -9: {len(kids) - len(alive)} of {len(kids)} children "
              f"({len(workers)} workers) gone in {took:.2f} s")
        assert not alive, {k: commands[k] for k in alive}
        assert took < 5
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        for k in kids:  # leave nothing behind when the test fails
            if _stat(k) is not None and _cmdline(k) == commands.get(k):
                try:
                    os.kill(k, signal.SIGKILL)
                except OSError:
                    pass
