r"""Entry point: python -m internvideo_jax.main --config experiments/X.py:PRESET --workdir DIR.

Overrides: --config.batch_size=32 (unknown keys fail). A workdir holding a checkpoint resumes.
--mode=evaluate runs the task's evaluation alone from the workdir's latest checkpoint (a workdir
without one: --config.init_from); --mode=extract_features writes per-video features
(internvideo_jax/offline.py).
Multi-host: started from the environment (INTERNVIDEO_COORDINATOR / INTERNVIDEO_DISTRIBUTED=auto,
see internvideo_jax/distributed.py), checked before any work; logs and metrics from host 0.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file:preset.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "extract_features"],
                          "train (resumes if possible), evaluate a checkpoint, or extract features.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    from internvideo_jax import distributed
    if distributed.initialize_from_env():  # multi-host: environment (internvideo_jax/distributed)
        distributed.startup_check()
    from internvideo_jax.xla_cache import enable_compilation_cache
    enable_compilation_cache()
    if _MODE.value == "train":
        from internvideo_jax import train
        train.train(_CONFIG.value, _WORKDIR.value)
        return
    import json
    from internvideo_jax import offline
    if _MODE.value == "evaluate":
        print(json.dumps(offline.evaluate(_CONFIG.value, _WORKDIR.value), indent=1))
    else:
        print(f"features written to {offline.extract_features(_CONFIG.value, _WORKDIR.value)}")


if __name__ == "__main__":
    app.run(main)
