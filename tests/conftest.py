"""Test setup: 8 fake CPU devices (sharding tests), parsed absl flags (grain workers), and the small
demo dataset built once per session in a temporary directory."""
import os

# The suite checks CPU numerics against references (float32 tolerances, 8 fake CPU devices); on a
# machine with a GPU, JAX would take the GPU instead (one device, TF32 matmuls). Set here, before
# jax is imported, so that the processes tests start inherit it too. JAX_PLATFORMS=cuda pytest
# runs the suite on a GPU on purpose; benchmarks/gpu_check.py is the GPU check.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.path.expanduser("~"), ".cache", "internvideo_jax", "xla_tests"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's multiprocessing reads absl flags


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data directory holding the small demo dataset (24 train / 8 validation videos)."""
    path = str(tmp_path_factory.mktemp("data"))
    from input_pipelines import sources
    sources.demo_source("train", "small", path)
    return path
