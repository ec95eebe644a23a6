"""Faults a long run meets: damaged checkpoints, a full disk, a changed recipe, a wrong init_from,
metrics written past the last checkpoint. Each ends in a named message and loses nothing."""
import glob
import json
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest

from internvideo_jax.training import checkpointing, train
from internvideo_jax.training.metrics_writer import read_metrics
from tests.helpers import tiny_config


def _losses(workdir: str) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """A 9-step run uninterrupted, and one stopped after its step-6 checkpoint (kept: 3 and 6)."""
    root = tmp_path_factory.mktemp("runs")
    full, stopped = str(root / "full"), str(root / "stopped")
    train.train(tiny_config(data_dir, total_steps=9), full, progress=False)
    train.train(tiny_config(data_dir, total_steps=9), stopped, stop_after_step=6, progress=False)
    assert sorted(os.listdir(os.path.join(stopped, "checkpoints"))) == ["3", "6"]
    return full, stopped


def _largest_file(folder: str) -> str:
    files = [f for f in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(f)]
    return max(files, key=os.path.getsize)


def _damage(step_dir: str, kind: str) -> None:
    if kind == "truncated":
        path = _largest_file(os.path.join(step_dir, "state"))
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif kind == "deleted":
        os.remove(_largest_file(os.path.join(step_dir, "state")))
    elif kind == "corrupted":
        path = _largest_file(os.path.join(step_dir, "state"))
        data = bytearray(open(path, "rb").read())
        middle = len(data) // 2
        data[middle:middle + 4096] = bytes(4096)  # a zeroed block, as a bad sector reads
        open(path, "wb").write(bytes(data))
    elif kind == "empty_step_folder":
        shutil.rmtree(step_dir)
        os.makedirs(step_dir)


@pytest.mark.parametrize("kind", ["truncated", "deleted", "corrupted", "empty_step_folder"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(runs, data_dir, tmp_path,
                                                                    kind, caplog):
    full, stopped = runs
    work = str(tmp_path / "w")
    shutil.copytree(stopped, work)
    _damage(os.path.join(work, "checkpoints", "6"), kind)
    with caplog.at_level(logging.WARNING):
        train.train(tiny_config(data_dir, total_steps=9), work, progress=False)
    warning = " ".join(r.getMessage() for r in caplog.records if "is damaged" in r.getMessage())
    assert f"checkpoint {work}/checkpoints/6 is damaged" in warning, caplog.text
    assert "renamed to" in warning and "6.damaged" in warning
    assert os.path.isdir(os.path.join(work, "checkpoints", "6.damaged"))  # kept, not deleted
    # Resumed at 3: steps 4-9 are trained again, with the uninterrupted run's batches and losses.
    a, b = _losses(full), _losses(work)
    assert sorted(b) == list(range(1, 10))  # every step once (the lines past 3 were replaced)
    for step in range(4, 10):
        assert b[step] == a[step], (kind, step)


def test_resume_strict_refuses_a_damaged_checkpoint_and_touches_nothing(runs, data_dir, tmp_path):
    _, stopped = runs
    work = str(tmp_path / "w")
    shutil.copytree(stopped, work)
    _damage(os.path.join(work, "checkpoints", "6"), "truncated")
    before = sorted(os.listdir(os.path.join(work, "checkpoints")))
    with pytest.raises(checkpointing.NoIntactCheckpoint,
                       match=rf"checkpoint {work}/checkpoints/6 is damaged .*resume_strict=True"):
        train.train(tiny_config(data_dir, total_steps=9, resume_strict=True), work,
                    progress=False)
    assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == before


def test_resuming_with_another_recipe_is_refused_unless_allowed(runs, data_dir, tmp_path):
    full, stopped = runs
    work = str(tmp_path / "w")
    shutil.copytree(stopped, work)
    with pytest.raises(ValueError, match=r"checkpoints/6 was saved with another config: "
                                         r"batch_size: 8 -> 16; model.mask_ratio: 0.9 -> 0.75\."
                                         r".*allow_config_change=batch_size,model.mask_ratio"):
        train.train(tiny_config(data_dir, total_steps=9, batch_size=16,
                                **{"model.mask_ratio": 0.75}), work, progress=False)
    # Where and how it runs may change: the worker count, logging, the mesh.
    train.train(tiny_config(data_dir, total_steps=9, log_every=3, **{"data.num_workers": 0}),
                work, stop_after_step=6, progress=False)
    # Allowed explicitly: a longer run.
    train.train(tiny_config(data_dir, total_steps=10, allow_config_change="total_steps"), work,
                progress=False)
    assert max(_losses(work)) == 10


def test_metrics_past_the_resumed_step_are_dropped(runs, data_dir, tmp_path):
    """A run killed after step 6's checkpoint had logged steps 7-8: resuming drops those lines,
    so every step is in metrics.jsonl once."""
    full, stopped = runs
    work = str(tmp_path / "w")
    shutil.copytree(stopped, work)
    with open(os.path.join(work, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 7, "loss": 123.0}) + "\n")
        f.write(json.dumps({"step": 8, "loss": 456.0}) + "\n")
        f.write('{"step": 9, "lo')  # the line the kill cut off
    train.train(tiny_config(data_dir, total_steps=9), work, progress=False)
    steps = [r["step"] for r in read_metrics(work) if "loss" in r]
    assert steps == list(range(1, 10))
    assert _losses(work)[7] == _losses(full)[7]


def _mount_small_tmpfs(path: str, megabytes: int) -> bool:
    os.makedirs(path, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}M", "tmpfs", path],
                         capture_output=True)
    return out.returncode == 0


def test_a_full_disk_stops_the_run_with_one_line(data_dir, tmp_path, monkeypatch):
    """The workdir on a 24 MiB file system: the step-3 checkpoint fits, step 6's does not. The run
    stops at the next step with one line naming the checkpoint, the path, the OS error and the
    intact checkpoint (a simulated ENOSPC where no tmpfs can be mounted)."""
    disk = str(tmp_path / "disk")
    mounted = _mount_small_tmpfs(disk, 24)
    try:
        if not mounted:  # simulate the writer's error where mounting is not allowed
            import orbax.checkpoint as ocp
            real = ocp.CheckpointManager.check_for_errors
            calls = {"n": 0}

            def failing(self):
                steps = self.all_steps()
                if 6 in steps or calls["n"]:
                    calls["n"] += 1
                    raise OSError(28, "No space left on device")
                return real(self)
            monkeypatch.setattr(ocp.CheckpointManager, "check_for_errors", failing)
        work = os.path.join(disk, "w")
        with pytest.raises(checkpointing.SaveFailed) as e:
            train.train(tiny_config(data_dir, total_steps=12, checkpoint_every=3, keep_checkpoints=5),
                        work, progress=False)
        message = str(e.value)
        assert len(message.splitlines()) == 1
        assert "No space left on device" in message and os.path.join(work, "checkpoints") in message
        failed = int(message.split("checkpoint of step ")[1].split()[0])
        assert failed > 3 and f"The previous checkpoint, step {failed - 3}, is intact" in message
        # The intact checkpoint restores: the run resumes from it once there is room.
        assert checkpointing.Checkpointer(work, keep=5).latest_step() >= failed - 3
    finally:
        if mounted:  # lazily: files the failed save left open are released later
            subprocess.run(["umount", "-l", disk], capture_output=True)


def test_init_from_a_run_of_another_model_is_refused(data_dir):
    from experiments.finetune import get_config
    from internvideo_jax.tasks import get_task
    import jax
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir)
    task = get_task(c)
    import flax.linen as nn
    params = nn.meta.unbox(task.init_variables(jax.random.key(0), task.init_batch(1)))["params"]
    other = {"visual": {"encoder": {"conv1": {"kernel": np.zeros((3, 3))}}}}  # a multimodal tree
    with pytest.raises(ValueError, match=r"init_from fills 0 of this classifier's \d+ encoder "
                                         r"tensors .*not a VideoMAE run or import of this size"):
        task.load_pretrained(params, other)


def test_a_missing_dataset_directory_is_named_and_nothing_is_created(data_dir, tmp_path):
    work = str(tmp_path / "w")
    with pytest.raises(FileNotFoundError, match=r"data.dataset=/data/nope/1.0.0: no such "
                                                r"directory. Give the packed dataset's version"):
        train.train(tiny_config(data_dir, **{"data.dataset": "/data/nope/1.0.0"}), work,
                    progress=False)
    assert not os.path.exists(work)


def test_fingerprint_is_the_bit_sum_and_sees_one_changed_value():
    import jax
    import jax.numpy as jnp
    tree = {"w": jnp.arange(10, dtype=jnp.float32), "h": jnp.ones(3, jnp.bfloat16),
            "n": jnp.int32(7), "key": jax.random.key(0)}
    got = checkpointing.fingerprint(tree)
    by_hand = int(np.arange(10, dtype=np.float32).view(np.uint32).astype(np.uint64).sum() % 2**32)
    assert got == {"['w']": by_hand, "['h']": 3 * 0x3F80, "['n']": 7}  # bf16 1.0 = 0x3F80
    changed = dict(tree, w=tree["w"].at[3].set(0.0))
    with pytest.raises(checkpointing.CheckpointDamaged, match=r"1 restored arrays differ"):
        checkpointing.check_fingerprint(changed, {"fingerprint": got}, "W/checkpoints/6")
    checkpointing.check_fingerprint(tree, {"fingerprint": got}, "W/checkpoints/6")  # intact
