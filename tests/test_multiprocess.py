"""Two real JAX processes on CPU (jax.distributed, gloo): disjoint complete data shards and a
training run whose global batches are assembled from both processes' local slices."""
import json
import os
import subprocess
import sys

import numpy as np
import portpicker

from tests.helpers import REPO


def _run_pair(mode: str, tmp_path, *extra: str) -> list[dict]:
    port = portpicker.pick_unused_port()
    env = dict(os.environ, PYTHONPATH=REPO)
    for k in ("INTERNVIDEO_COORDINATOR", "INTERNVIDEO_DISTRIBUTED"):
        env.pop(k, None)
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "distributed_check_worker.py"), mode,
         str(port), str(i), str(tmp_path / f"{mode}{i}.json"), *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [json.loads((tmp_path / f"{mode}{i}.json").read_text()) for i in range(2)]


def test_two_processes_equal_one_process_and_read_disjoint_complete_epochs(data_dir, tmp_path):
    """One pair of real processes (4 CPU devices each, gloo), the processes as the mesh's DCN
    slices (mesh.dcn_data=2):
    - the same global batches, supplied half by each process, give the losses and parameters of
      one process with 8 devices. Tolerance: float32 round-off of reductions done in another order
      (the gloo all-reduce), ~1e-7 relative; a missing or wrong cross-process reduction changes
      the loss at the 1e-2 level;
    - each process reads its own half of every epoch of the 24-video index stream (no video lost
      or read twice, reshuffled each epoch), and train.train runs 2 steps on those shards."""
    from tests.step_equivalence import run_steps
    out = _run_pair("ok", tmp_path, data_dir, str(tmp_path / "work"))
    assert all("error" not in o for o in out), out
    assert out[0]["hosts"] == out[1]["hosts"] == 2
    losses, sums = run_steps(process_rows=False)
    for o in out:
        np.testing.assert_allclose(o["losses"], losses, rtol=1e-5)
        np.testing.assert_allclose(o["param_sums"], sums, rtol=1e-4, atol=1e-5)
    assert [o["process_index"] for o in out] == [0, 1]
    assert all(o["process_count"] == 2 and o["devices"] == 8 for o in out)
    for epoch in range(2):
        a, b = out[0]["epochs"][epoch], out[1]["epochs"][epoch]
        assert len(a) == len(b) == 12
        assert set(a).isdisjoint(b) and sorted(a + b) == list(range(24))  # no loss, no duplicate
    assert out[0]["epochs"][0] != out[0]["epochs"][1]  # reshuffled each epoch
    assert out[0]["final_step"] == out[1]["final_step"] == 2
    assert len(out[0]["train_losses"]) == 2 and np.all(np.isfinite(out[0]["train_losses"]))


def test_startup_check_refuses_a_host_with_other_code(tmp_path):
    out = _run_pair("stale", tmp_path)
    for o in out:  # both processes refuse, and name process 1
        assert "Hosts disagree" in o["error"] and "process 1 (" in o["error"], o


def test_startup_check_names_the_process_that_does_not_answer(tmp_path):
    out = _run_pair("missing", tmp_path)
    assert "processes [1] of 2 did not answer" in out[0]["error"], out[0]
