"""One JAX process of the 2-process CPU tests (run by tests/test_multiprocess.py, not by pytest).

argv: port process_id data_dir workdir out.json
"""
import json
import sys

import jax

port, pid, data_dir, workdir, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \
    sys.argv[5]
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=120)

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

from input_pipelines import builders  # noqa: E402
from internvideo_jax import train  # noqa: E402
from internvideo_jax.metrics_writer import read_metrics  # noqa: E402
from tests.helpers import tiny_config  # noqa: E402

result = {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "devices": jax.device_count()}
# Two epochs of the index stream this process reads.
stream, epoch = builders.index_stream(24, seed=3, process_index=jax.process_index(),
                                      process_count=jax.process_count())
result["epochs"] = [[int(stream[e * epoch + i]) for i in range(epoch)] for e in range(2)]
# A few real training steps: the global batch of 8 is 4 clips from each process.
state = train.train(tiny_config(data_dir, total_steps=2, checkpoint_every=2), workdir,
                    progress=False)
if jax.process_index() == 0:
    result["losses"] = [r["loss"] for r in read_metrics(workdir)]
result["final_step"] = int(state.step)
with open(out, "w") as f:
    json.dump(result, f)
jax.distributed.shutdown()
