"""The persistent XLA compilation cache shared by the entry points."""
from __future__ import annotations

import os


def enable_compilation_cache() -> None:
    """Persistent XLA cache: a second run of the same config skips most compilation."""
    import jax
    path = os.environ.get("INTERNVIDEO_JAX_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "internvideo_jax", "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
