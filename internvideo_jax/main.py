r"""Entry point: python -m internvideo_jax.main --config experiments/X.py:PRESET --workdir DIR.

Overrides: --config.batch_size=32 (unknown keys fail). A workdir holding a checkpoint resumes.
--mode=evaluate runs the task's evaluation alone from the workdir's latest checkpoint (a workdir
without one: --config.init_from); --mode=extract_features writes per-video features
(internvideo_jax/offline.py); --mode=extract_clip_features writes sliding-window clip features of
untrimmed videos for temporal localization (internvideo_jax/localization/features.py).
Multi-host: started from the environment (INTERNVIDEO_COORDINATOR / INTERNVIDEO_DISTRIBUTED=auto,
see internvideo_jax/infra/distributed.py), checked before any work; logs and metrics from host 0.
"""
from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file:preset.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "extract_features",
                                            "extract_clip_features"],
                          "train (resumes if possible), evaluate a checkpoint, extract one feature "
                          "per video, or sliding-window clip features of untrimmed videos.")
flags.mark_flags_as_required(["config", "workdir"])


# Mistakes a user makes (a missing file, a bad setting, a run that cannot resume) end in one
# line naming the fix; INTERNVIDEO_TRACEBACK=1 shows the traceback as well.
USER_ERRORS = (FileNotFoundError, ValueError, RuntimeError)


def unknown_key_message(error: BaseException, argv: list[str]) -> str:
    """ml_collections' AttributeError for an unknown --config.key, as one line with the dotted
    key and its suggestion: unknown config key 'bach_size' (did you mean 'batch_size'?)."""
    text = str(error.args[0] if error.args else error).replace("\\n", "\n")
    key = re.search(r"'([^'\\]+)", text)
    key = key.group(1) if key else text.splitlines()[0]
    dotted = next((a.split("=", 1)[0][len("--config."):] for a in argv
                   if a.startswith("--config.") and a.split("=", 1)[0].endswith("." + key)),
                  key)
    guess = re.search(r'Did you mean "([^"]+)"', text)
    hint = ""
    if guess:
        hint = f" (did you mean '{dotted[:len(dotted) - len(key)]}{guess.group(1)}'?)"
    return f"unknown config key '{dotted}'{hint}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config overrides that name no key reported in one line."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:  # ml_collections: --config.<unknown key>
        print(f"error: {unknown_key_message(e, argv)}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv) -> None:
    del argv
    try:
        run()
    except USER_ERRORS as e:
        if os.environ.get("INTERNVIDEO_TRACEBACK"):
            raise
        first = str(e).strip().splitlines()
        print(f"error: {first[0] if first else type(e).__name__} "
              f"[{type(e).__name__}; INTERNVIDEO_TRACEBACK=1 for the traceback]", file=sys.stderr)
        sys.exit(1)


def run() -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    # Imports deferred on purpose: flag parsing (--help, a bad --config key) loads no JAX or
    # training stack, and the multi-host start below runs before train/offline are imported.
    from internvideo_jax.infra import distributed
    if distributed.initialize_from_env():  # multi-host: environment (internvideo_jax/distributed)
        distributed.startup_check()
    from internvideo_jax.infra.xla_cache import enable_compilation_cache
    enable_compilation_cache()
    if _MODE.value == "train":
        from internvideo_jax.training import train
        train.train(_CONFIG.value, _WORKDIR.value)
        return
    import json
    from internvideo_jax import offline
    if _MODE.value == "evaluate":
        print(json.dumps(offline.evaluate(_CONFIG.value, _WORKDIR.value), indent=1))
    elif _MODE.value == "extract_clip_features":
        path = offline.extract_clip_features(_CONFIG.value, _WORKDIR.value)
        print(f"clip features written to {path} (--config.data.features={path} for "
              f"experiments/localization.py)")
    else:
        print(f"features written to {offline.extract_features(_CONFIG.value, _WORKDIR.value)}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
