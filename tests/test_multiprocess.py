"""Two real JAX processes on CPU (jax.distributed, gloo): disjoint complete data shards and a
training run whose global batches are assembled from both processes' local slices."""
import json
import os
import subprocess
import sys

import numpy as np
import portpicker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_read_disjoint_complete_epochs_and_train(data_dir, tmp_path):
    port = portpicker.pick_unused_port()
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "distributed_worker.py"), str(port), str(i),
         data_dir, str(tmp_path / "work"), str(tmp_path / f"out{i}.json")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    out = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert [o["process_index"] for o in out] == [0, 1]
    assert all(o["process_count"] == 2 and o["devices"] == 8 for o in out)
    for epoch in range(2):
        a, b = out[0]["epochs"][epoch], out[1]["epochs"][epoch]
        assert len(a) == len(b) == 12
        assert set(a).isdisjoint(b) and sorted(a + b) == list(range(24))  # no loss, no duplicate
    assert out[0]["epochs"][0] != out[0]["epochs"][1]  # reshuffled each epoch
    assert out[0]["final_step"] == out[1]["final_step"] == 2
    assert len(out[0]["losses"]) == 2 and np.all(np.isfinite(out[0]["losses"]))
