"""One process of the multi-host start-up and step-equivalence tests (run by
tests/test_multiprocess.py, not by pytest).

argv: mode port process_id out.json [data_dir workdir]
  mode 'ok'        initialise from INTERNVIDEO_* variables, pass the start-up check, run two
                   sharded train steps on fixed global batches (this process supplies its rows);
                   then read two epochs of this process's index stream and run train.train for
                   2 steps on the small demo dataset in data_dir (global batch 8: 4 per process)
  mode 'stale'     process 1 pretends to run other code: both must refuse, naming it
  mode 'missing'   process 1 never calls the check: process 0 must time out, naming it
"""
import json
import os
import sys
import time

import jax

mode, port, pid, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
os.environ.update(INTERNVIDEO_COORDINATOR=f"127.0.0.1:{port}", INTERNVIDEO_NUM_PROCESSES="2",
                  INTERNVIDEO_PROCESS_ID=str(pid))
if mode == "stale" and pid == 1:
    os.environ["INTERNVIDEO_FINGERPRINT_EXTRA"] = "stale-checkout"

from internvideo_jax.infra import distributed  # noqa: E402


def _shard_and_train(data_dir: str, workdir: str) -> dict:
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from input_pipelines import builders
    from internvideo_jax.training import train
    from internvideo_jax.training.metrics_writer import read_metrics
    from tests.helpers import tiny_config
    got = {"process_index": jax.process_index(), "process_count": jax.process_count(),
           "devices": jax.device_count()}
    stream, epoch = builders.index_stream(24, seed=3, process_index=jax.process_index(),
                                          process_count=jax.process_count())
    got["epochs"] = [[int(stream[e * epoch + i]) for i in range(epoch)] for e in range(2)]
    state = train.train(tiny_config(data_dir, total_steps=2, checkpoint_every=2), workdir,
                        progress=False)
    if jax.process_index() == 0:
        got["train_losses"] = [r["loss"] for r in read_metrics(workdir)]
    got["final_step"] = int(state.step)
    return got


assert distributed.initialize_from_env(timeout_s=60)
result = {}
try:
    if mode == "missing" and pid == 1:
        time.sleep(8)  # never answers; process 0 gives up after 3 s
    else:
        answers = distributed.startup_check(timeout_s=3 if mode == "missing" else 60)
        result["hosts"] = len(answers)
        if mode == "ok":
            from tests.step_equivalence import run_steps
            result["losses"], result["param_sums"] = run_steps(process_rows=True)
            result.update(_shard_and_train(*sys.argv[5:7]))
except Exception as e:  # the test reads the message
    result["error"] = f"{type(e).__name__}: {e}"
with open(out, "w") as f:
    json.dump(result, f)
jax.distributed.shutdown()  # every mode's processes all get here (the silent one after its sleep)
