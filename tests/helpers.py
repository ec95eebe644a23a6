"""Test helpers without side effects (conftest.py configures JAX; workers import this)."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout's root


def tiny_config(data_dir: str, **overrides):
    """The tiny pretraining preset on the small demo dataset, for fast tests."""
    from experiments.videomae_pretrain import get_config
    c = get_config("tiny")
    c.data.dataset = "demo/small"
    c.data.data_dir = data_dir
    c.batch_size = 8
    c.total_steps = 6
    c.log_every = 1
    c.checkpoint_every = 3
    c.optim.warmup_epochs = 0.3
    c.pictures.every_steps = 0  # the preset draws reconstructions; tests that check them say so
    return apply_overrides(c, overrides)


def snapshot(path: str) -> dict:
    """Every file and directory under path: (mtime_ns, bytes) of files, mtime of directories; two
    equal snapshots mean nothing there was touched."""
    out = {}
    for root, _, files in os.walk(path):
        out[os.path.relpath(root, path)] = os.stat(root).st_mtime_ns
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = (os.stat(p).st_mtime_ns, f.read())
    return out


def apply_overrides(config, overrides: dict):
    """Set dotted keys ('data.num_workers') on a config, as --config.x.y=v would."""
    for k, v in overrides.items():
        node = config
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return config
