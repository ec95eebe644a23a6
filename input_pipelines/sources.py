"""Random-access sources of encoded videos: TFDS ArrayRecord datasets (no TensorFlow needed).

Every source yields dicts with at least:
  video: bytes (an encoded container, e.g. mp4), label: int, caption: bytes/str, video_id: bytes/str,
  num_frames: int (probed when the dataset was built), fps: float.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from input_pipelines import (annotations, generated, synthetic_ava, synthetic_qa,
                             synthetic_untrimmed, synthetic_videos)

# The embedded demo dataset, by config name: (train videos, validation videos, frame size, frames).
DEMO_CONFIGS = {
    "default": dict(num_train=800, num_validation=200, size=80, num_frames=32, seed=0),
    # A few videos, for tests.
    "small": dict(num_train=24, num_validation=8, size=80, num_frames=32, seed=1),
}


class DemoVideos(generated.GeneratedVideos):
    """Synthetic motion videos (H.264 mp4), 8 motion classes, one caption each.

    VERSION names the bytes that a build writes: a change to them bumps it, so that a data
    directory built before rebuilds rather than serving the old videos. 1.3.0: the mp4s are
    encoded with libx264's mbtree off (synthetic_videos.encode_mp4), which makes two builds
    byte-identical; 1.2.0 builds differed from one another in ~170 of the 800 training videos.
    """

    VERSION = tfds.core.Version("1.3.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in DEMO_CONFIGS]
    CONFIGS = DEMO_CONFIGS

    def features(self) -> dict:
        return generated.video_features(
            tfds.features.ClassLabel(names=list(synthetic_videos.CLASSES)))

    def make(self, seed: int, index: int, c: dict) -> dict:
        return synthetic_videos.make_example(seed, index, size=c["size"],
                                             num_frames=c["num_frames"])


# The embedded untrimmed dataset (temporal action localization), by config name: videos per split,
# frame size (pixels), frame rate (frames / second) and video durations (seconds).
UNTRIMMED_CONFIGS = {
    "default": dict(num_train=120, num_validation=40, size=80, fps=25, min_seconds=8,
                    max_seconds=16, seed=0),
    # A few short videos, for tests.
    "small": dict(num_train=8, num_validation=4, size=80, fps=25, min_seconds=6, max_seconds=8,
                  seed=1),
}
# The ActivityNet subset of each split.
UNTRIMMED_SUBSETS = {"train": "training", "validation": "validation"}


class DemoUntrimmed(generated.GeneratedVideos):
    """Synthetic untrimmed videos (H.264 mp4): one shape that rests and, in 1-3 segments, performs
    one of the 8 motion classes of DemoVideos (synthetic_untrimmed).

    segments: (N, 3) float32 rows [start_s, end_s, class index], seconds; label is -1 (a video
    has no single class). VERSION names the bytes a build writes (see DemoVideos).
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in UNTRIMMED_CONFIGS]
    CONFIGS = UNTRIMMED_CONFIGS

    def features(self) -> dict:
        return generated.video_features(
            duration=generated.seconds(),
            segments=tfds.features.Tensor(shape=(None, 3), dtype=np.float32))

    def make(self, seed: int, index: int, c: dict) -> dict:
        ex = synthetic_untrimmed.make_untrimmed_example(
            seed, index, size=c["size"], fps=c["fps"], min_seconds=c["min_seconds"],
            max_seconds=c["max_seconds"])
        ex["segments"] = np.asarray(ex["segments"], np.float32).reshape(-1, 3)
        return ex


def default_data_dir() -> str:
    """Where datasets are built and read: $INTERNVIDEO_DATA_DIR, else ~/.cache/internvideo_jax/data."""
    return os.environ.get("INTERNVIDEO_DATA_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "internvideo_jax", "data"))


def demo_source(split: str, config: str = "default", data_dir: str | None = None):
    """The demo dataset's split as a random-access source, generated on first use (~40 s).

    Processes that share a data directory (two runs, test workers, the hosts of a job on one
    file system) take turns to build it: the first builds, the others then find it built (TFDS
    alone would let each build and all but one fail to rename theirs into place)."""
    data_dir = data_dir or default_data_dir()
    # A cloud bucket has no flock: build it from one process first.
    lock = (contextlib.nullcontext() if "://" in data_dir
            else _exclusive(os.path.join(data_dir, f"demo_videos.{config}.lock")))
    with lock:
        builder = DemoVideos(config=config, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()
    return builder.as_data_source(split)


@contextlib.contextmanager
def _demo_untrimmed_builder(config: str, data_dir: str | None):
    """The untrimmed demo dataset's builder, generated on first use; the block runs under a lock
    on the data directory (as demo_source's build does)."""
    data_dir = data_dir or default_data_dir()
    lock = (contextlib.nullcontext() if "://" in data_dir
            else _exclusive(os.path.join(data_dir, f"demo_untrimmed.{config}.lock")))
    with lock:
        builder = DemoUntrimmed(config=config, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()
        yield builder


def demo_untrimmed_source(split: str, config: str = "default", data_dir: str | None = None):
    """The untrimmed demo dataset's split ('train' or 'validation') as a random-access source,
    generated on first use."""
    with _demo_untrimmed_builder(config, data_dir) as builder:
        return builder.as_data_source(split)


def demo_untrimmed_ground_truth(config: str = "default", data_dir: str | None = None) -> str:
    """Path of the ActivityNet-1.3 style ground-truth JSON of the untrimmed demo dataset (both
    splits; subsets 'training' and 'validation'), in the built dataset's version directory.

    Written once, from the built dataset's own records, so it always matches the videos; under
    the dataset's lock, to a temporary file renamed into place (a reader never sees half a file).
    A local data directory only (written with open and os.replace)."""
    with _demo_untrimmed_builder(config, data_dir) as builder:
        path = os.path.join(builder.data_dir, "ground_truth.json")
        if not os.path.exists(path):
            examples = ((UNTRIMMED_SUBSETS[split], ex) for split in UNTRIMMED_SUBSETS
                        for ex in builder.as_data_source(split))
            truth = synthetic_untrimmed.ground_truth(
                examples, version=f"{builder.name}/{config} {builder.version}")
            tmp = f"{path}.tmp.{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(truth, f)
            os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _exclusive(lock_path: str):
    """Hold an exclusive advisory lock (flock) on lock_path, created if absent, for the block.
    Where the file cannot be created (a read-only directory holding a built dataset) no process
    can build there either, so there is nothing to wait for and the block runs unlocked."""
    try:
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        handle = open(lock_path, "a")
    except OSError:
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tfds_source(name: str, split: str, data_dir: str | None = None):
    """A TFDS ArrayRecord dataset by registered name or by its prepared directory."""
    if os.path.isdir(name):
        return tfds.builder_from_directory(name).as_data_source(split)
    return tfds.data_source(name, split=split, data_dir=data_dir or default_data_dir())


class FileListSource:
    """Videos read straight from disk, listed by an annotation file (no packing step).

    Examples carry 'path' and num_frames = 0 (probed when decoded). A missing or unreadable file
    raises OSError on access; the pipeline skips and counts it (input_pipelines/robust.py).
    """

    def __init__(self, annotation_path: str, fmt: str, video_root: str | None = None,
                 labels_path: str | None = None):
        self.records = annotations.read(annotation_path, fmt, labels_path)
        self.root = video_root or os.path.dirname(os.path.abspath(annotation_path))

    def __len__(self) -> int:
        return len(self.records)

    def describe(self, index: int) -> str:
        """The file path of example `index` (for error reports)."""
        path = self.records[index]["path"]
        return path if os.path.isabs(path) else os.path.join(self.root, path)

    def __getitem__(self, index: int) -> dict:
        r = self.records[index]
        path = self.describe(index)
        with open(path, "rb") as f:
            data = f.read()
        return annotations.example(r, data, path)


def check_exists(data) -> None:
    """Fail early, before a run writes anything, when config.data names files that are not there
    (TFDS would answer a missing directory with its dataset-name help)."""
    for key in ("dataset", "eval_dataset"):
        dataset = data.get(key) or ""
        if not dataset:
            continue
        if is_file_list(dataset):
            path = dataset.partition(":")[2]
            if not os.path.isfile(path):
                raise FileNotFoundError(f"data.{key}={dataset}: the annotation file {path} "
                                        f"does not exist.")
        elif dataset.startswith(("/", ".", "~")) \
                and not os.path.isdir(os.path.expanduser(dataset)):  # a path (not a TFDS name)
            raise FileNotFoundError(
                f"data.{key}={dataset}: no such directory. Give the packed dataset's version "
                f"directory (the path `python -m input_pipelines.build pack` printed, e.g. "
                f"/data/tfds/video_folder/k400/1.0.0), a registered TFDS name, 'demo', or "
                f"<format>:<annotation file>.")


def is_file_list(dataset: str) -> bool:
    """Whether a config's dataset names an annotation file read directly ('list:train.txt')."""
    fmt, sep, _ = dataset.partition(":")
    return bool(sep) and fmt in annotations.FORMATS


def open_source(dataset: str, split: str, data_dir: str | None = None, *,
                video_root: str | None = None, labels_path: str | None = None):
    """Resolve a config's dataset: 'demo', 'demo/small', 'demo_untrimmed', 'demo_untrimmed/small',
    'demo_qa', 'demo_qa/small' (the demo videos with their questions: synthetic_qa), 'demo_ava',
    'demo_ava/small' (AVA-style keyframes: synthetic_ava.source; 'train' on the ground-truth
    boxes, 'validation' on the detections), a TFDS name or prepared directory, or
    '<format>:<annotation file>' (format: list, csv, ssv2, captions, qa, mc) to read files
    directly."""
    if is_file_list(dataset):
        fmt, _, rest = dataset.partition(":")
        return FileListSource(rest, fmt, video_root, labels_path)
    if _is_demo(dataset, "demo_qa"):
        return synthetic_qa.DemoQASource(split, _demo_config(dataset, DEMO_CONFIGS), data_dir)
    if _is_demo(dataset, "demo_ava"):
        return synthetic_ava.source(split, _demo_config(dataset, synthetic_ava.AVA_CONFIGS),
                                    data_dir)
    if _is_demo(dataset, "demo_untrimmed"):
        return demo_untrimmed_source(split, _demo_config(dataset, UNTRIMMED_CONFIGS), data_dir)
    if _is_demo(dataset, "demo"):
        return demo_source(split, _demo_config(dataset, DEMO_CONFIGS), data_dir)
    return tfds_source(dataset, split, data_dir)


def _is_demo(dataset: str, name: str) -> bool:
    """Whether `dataset` names the embedded dataset `name`: 'name' or 'name/<config>'."""
    return dataset == name or dataset.startswith(name + "/")


def _demo_config(dataset: str, configs: dict) -> str:
    """The config of 'name/<config>' ('default' for a bare 'name'), checked against `configs`."""
    name, slash, config = dataset.partition("/")
    config = config if slash else "default"
    if config not in configs:
        raise ValueError(f"Unknown {name} dataset config {config!r}; choose one of "
                         f"{sorted(configs)}.")
    return config
