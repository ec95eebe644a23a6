"""One process of the multi-host start-up and step-equivalence tests (run by
tests/test_multiprocess.py, not by pytest).

argv: mode port process_id out.json
  mode 'ok'        initialise from INTERNVIDEO_* variables, pass the start-up check, run two
                   sharded train steps on fixed global batches (this process supplies its rows)
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

from internvideo_jax import distributed  # noqa: E402

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
except Exception as e:  # the test reads the message
    result["error"] = f"{type(e).__name__}: {e}"
with open(out, "w") as f:
    json.dump(result, f)
jax.distributed.shutdown()  # every mode's processes all get here (the silent one after its sleep)
