"""Multi-host start-up: jax.distributed from the environment, then a check before any work.

Initialisation (`initialize_from_env`), in order:
  INTERNVIDEO_COORDINATOR=host:port, INTERNVIDEO_NUM_PROCESSES=N, INTERNVIDEO_PROCESS_ID=i
      explicit (GPU clusters without a scheduler, CPU tests);
  INTERNVIDEO_DISTRIBUTED=auto
      jax.distributed.initialize() with no arguments: Cloud TPU VMs and SLURM/Open MPI describe the
      job themselves (launch_tpu.sh sets this);
  neither: one process, nothing to initialise.

The start-up check (`startup_check`, run by main before training) makes a pod run fail in the
first minute instead of hanging or diverging hours later:
  1. roll call: every process publishes {hostname, code hash, library versions} in the
     coordinator's key-value store and reads everyone else's within `timeout_s`; a process that
     does not answer is named (index) in the error;
  2. every process must run the same code (a hash of this project's .py files) and the same
     versions of jax/jaxlib/flax/optax/orbax/grain/numpy; differences are listed per host;
  3. one all-gather over all devices must complete within `timeout_s` (the collectives backend
     and the network between hosts work).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from importlib import metadata

import jax
import numpy as np

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CODE_DIRS = ("internvideo_jax", "input_pipelines", "experiments")


def initialize_from_env(timeout_s: int = 300) -> bool:
    """Start jax.distributed as the environment says (module doc). True when it did."""
    env = os.environ
    if env.get("INTERNVIDEO_COORDINATOR"):
        missing = [k for k in ("INTERNVIDEO_NUM_PROCESSES", "INTERNVIDEO_PROCESS_ID")
                   if not env.get(k)]
        if missing:
            raise ValueError(f"INTERNVIDEO_COORDINATOR is set but {missing} are not: set all "
                             f"three (coordinator host:port, process count, this process's id).")
        jax.distributed.initialize(coordinator_address=env["INTERNVIDEO_COORDINATOR"],
                                   num_processes=int(env["INTERNVIDEO_NUM_PROCESSES"]),
                                   process_id=int(env["INTERNVIDEO_PROCESS_ID"]),
                                   initialization_timeout=timeout_s)
        return True
    if env.get("INTERNVIDEO_DISTRIBUTED") == "auto":
        jax.distributed.initialize(initialization_timeout=timeout_s)
        return True
    return False


def code_hash() -> str:
    """SHA-256 over this project's Python sources (path and content, sorted)."""
    h = hashlib.sha256()
    for top in _CODE_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(_ROOT, top)):
            dirnames.sort()
            for name in sorted(f for f in filenames if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                h.update(os.path.relpath(path, _ROOT).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def fingerprint() -> dict:
    """What must agree across hosts: the code and the library versions."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    extra = os.environ.get("INTERNVIDEO_FINGERPRINT_EXTRA")  # tests: simulate a stale host
    return {"code": code_hash() + (f"+{extra}" if extra else ""), "versions": versions}


def _state():
    """jax.distributed's state: the coordinator's key-value store client and this process's id.
    Read without touching the backend: initialising devices already needs every process, so the
    roll call must come first to name a silent one."""
    from jax._src import distributed as jax_distributed
    return jax_distributed.global_state


def roll_call(timeout_s: float) -> list[dict]:
    """Every process's {'process', 'host', 'code', 'versions'}, in process order."""
    state = _state()
    if state.client is None:
        raise RuntimeError("jax.distributed is not initialised (initialize_from_env first).")
    client, me, n = state.client, state.process_id, state.num_processes
    mine = {"process": me, "host": socket.gethostname(), **fingerprint()}
    client.key_value_set(f"internvideo/startup/{me}", json.dumps(mine))
    answers, silent = [], []
    for i in range(n):
        try:
            raw = client.blocking_key_value_get(f"internvideo/startup/{i}",
                                                int(timeout_s * 1000))
            answers.append(json.loads(raw))
        except Exception:  # the client raises on timeout (its error type is not public)
            silent.append(i)
    if silent:
        raise TimeoutError(f"process {me} ({mine['host']}): processes {silent} of {n} did not "
                           f"answer the start-up roll call within {timeout_s:.0f} s (not started, "
                           f"crashed before it, or cannot reach the coordinator). Answered: "
                           f"{[(a['process'], a['host']) for a in answers]}.")
    return answers


def compare(answers: list[dict]) -> None:
    """Refuse hosts whose code or library versions differ from process 0's, listing them."""
    ref = answers[0]
    problems = []
    for a in answers[1:]:
        if a["code"] != ref["code"]:
            problems.append(f"process {a['process']} ({a['host']}): code {a['code'][:12]} vs "
                            f"{ref['code'][:12]} on process 0")
        diff = {k: (v, ref["versions"].get(k)) for k, v in a["versions"].items()
                if v != ref["versions"].get(k)}
        if diff:
            problems.append(f"process {a['process']} ({a['host']}): versions (here, process "
                            f"0) {diff}")
    if problems:
        raise RuntimeError("Hosts disagree; every host must run the same checkout and pinned "
                           "requirements (launch_tpu.sh setup does both):\n  "
                           + "\n  ".join(problems))


def collective_check(timeout_s: float) -> None:
    """One all-gather over every process must finish within timeout_s."""
    from jax.experimental import multihost_utils
    done: dict = {}

    def gather():
        try:
            done["value"] = multihost_utils.process_allgather(np.int32(jax.process_index()))
        except Exception as e:  # reported below
            done["error"] = e

    thread = threading.Thread(target=gather, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"process {jax.process_index()}: an all-gather over "
                           f"{jax.process_count()} processes did not complete in {timeout_s:.0f} "
                           f"s although all answered the roll call: check the collectives backend "
                           f"and the network between hosts.")
    if "error" in done:
        raise RuntimeError(f"the start-up all-gather failed: {done['error']}")
    if list(np.asarray(done["value"]).ravel()) != list(range(jax.process_count())):
        raise RuntimeError(f"the start-up all-gather returned {done['value']}.")


def startup_check(timeout_s: float = 120.0) -> list[dict]:
    """Roll call, same code and versions, one collective (module doc). No-op on one process."""
    if _state().client is None or _state().num_processes == 1:
        return []
    answers = roll_call(timeout_s)
    compare(answers)
    collective_check(timeout_s)
    return answers
