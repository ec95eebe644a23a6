r"""Clip features over untrimmed videos: the first stage of temporal action localization.

  python -m internvideo_jax.main --mode=extract_clip_features \
      --config experiments/finetune.py:tiny --config.init_from=workdirs/demo/finetune \
      --config.data.dataset=demo_untrimmed --config.features.splits=train,validation \
      --workdir workdirs/demo/clip_features

A sliding window of clips over each whole video (ClipWindows: `clip_frames` frames `frame_step`
apart, a clip every `clip_stride` frames, every frame resized to size x size without a crop) goes
through the encoder's `clip_features` (tasks/base.py: the classifier's pooled feature, what its
head reads, and its softmax scores; the multimodal video tower's embedding). The reference
extractor (VideoMAEv2 extract_tad_feature.py) takes 16 frames, step 1, a clip every 4 frames
(THUMOS) or 16 (ActivityNet, HACS, FineAction), 224 x 224: features.clip_frames=16,
frame_step=1, clip_stride=4, size=224.

Per video: features (N, C) float32, times (N,) float32 seconds of each clip's centre after the
first shown frame (frame i*stride + span/2 at a constant rate, span = (clip_frames - 1) *
frame_step + 1; from the frame timestamps otherwise), scores (N, K) when the encoder has a
classifier. A video shorter than one span gives one clip whose missing frames repeat the last.

Batches of `features.batch_size` clips are filled across videos (one compilation), split over the
local devices' mesh; each process takes every process_count-th video of a split. Written under the
workdir:
  parts/<split>/<file>.npz   one per finished video, written atomically: a rerun skips them
  bad_videos.tsv             split, video id, reason of every video that could not be read
  extract_info.json          the checkpoint and windows: a rerun with others is refused
  video_features/<name>/1.0.0  the TFDS ArrayRecord dataset (one split per source split; records
                             in the source's order) once every video is done; videos.json there
                             lists the video ids of each split in record order
  npy/<split>/<video>.npy    with features.npy=True
The same checkpoint and videos give the same features (a fixed batch shape, no randomness).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator

import flax.linen as nn
import jax
import numpy as np
import tensorflow_datasets as tfds

from input_pipelines import builders, decode, robust
from internvideo_jax.infra.sharding import RULES

INFO_FILE = "extract_info.json"
BAD_FILE = "bad_videos.tsv"
INDEX_FILE = "videos.json"
FEATURE_INFO = "feature_info.json"  # in the dataset directory: extract_info.json's contents


@dataclasses.dataclass(frozen=True)
class ClipWindows:
    """The sliding window: clips of `clip_frames` frames `frame_step` apart, one every
    `clip_stride` frames, each frame resized to `size` x `size` (no crop)."""

    clip_frames: int
    frame_step: int
    clip_stride: int
    size: int

    def __post_init__(self):
        for name in ("clip_frames", "frame_step", "clip_stride", "size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"features.{name}={getattr(self, name)} must be positive.")

    @property
    def span(self) -> int:
        """Frames from a clip's first to its last, inclusive."""
        return (self.clip_frames - 1) * self.frame_step + 1

    def starts(self, num_frames: int) -> np.ndarray:
        """(N,) first frame of each clip: 0, stride, ... while the clip fits (at least one)."""
        return np.arange(0, max(num_frames - self.span, 0) + 1, self.clip_stride)

    def indices(self, start: int, num_frames: int) -> np.ndarray:
        """(clip_frames,) frame indices of the clip at `start`, the last frame repeated past the
        end."""
        return np.minimum(start + self.frame_step * np.arange(self.clip_frames), num_frames - 1)

    def times(self, frame_times: np.ndarray, fps: float) -> np.ndarray:
        """(N,) seconds of each clip's centre: halfway from its first frame's start to its last
        frame's end (frame i*stride + span/2 at a constant rate)."""
        n = len(frame_times)
        starts = self.starts(n)
        last = np.minimum(starts + self.span - 1, n - 1)
        period = 1.0 / fps if fps else 0.0
        return ((frame_times[starts] + frame_times[last] + period) / 2).astype(np.float32)


def video_clips(video: decode.Video, windows: ClipWindows) -> Iterator[np.ndarray]:
    """The clips of an opened video in order, (clip_frames, size, size, 3) uint8 each, in one
    forward decode that holds only the frames of clips not yet complete."""
    n = video.num_frames
    wanted = [windows.indices(int(s), n) for s in windows.starts(n)]
    needed = np.zeros(n, bool)
    last_use = np.full(n, -1)  # the last clip each frame belongs to
    for k, idx in enumerate(wanted):
        needed[idx] = True
        last_use[idx] = k
    buffer: dict[int, np.ndarray] = {}
    k = 0
    for i, frame in video.iter_frames():
        if needed[i]:
            buffer[i] = decode.to_rgb(frame, windows.size, windows.size)  # (S, S, 3)
        while k < len(wanted) and int(wanted[k][-1]) <= i:
            yield np.stack([buffer[j] for j in wanted[k]])  # (T, S, S, 3)
            k += 1
            for j in [j for j in buffer if last_use[j] < k]:
                del buffer[j]
        if k == len(wanted):
            return


def file_name(video_id: str) -> str:
    """A file name for a video id: its safe characters and a hash (distinct ids, distinct
    names)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("_")[:80] or "video"
    return f"{safe}-{hashlib.sha1(video_id.encode('utf-8')).hexdigest()[:8]}"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _save_atomic(path: str, **arrays) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


@dataclasses.dataclass
class _Pending:
    """A video whose clips are in flight: where its outputs go when they come back."""

    video_id: str
    path: str
    times: np.ndarray
    fps: float
    duration: float
    num_frames: int
    outputs: dict = dataclasses.field(default_factory=dict)
    filled: int = 0
    failed: bool = False


class Extractor:
    """Runs task.clip_features over the clips of many videos in fixed-size batches on `mesh`."""

    def __init__(self, task, variables: dict, mesh, windows: ClipWindows, batch_size: int):
        dp = mesh.shape["data"] * mesh.shape["fsdp"]
        if batch_size % dp:
            raise ValueError(f"features.batch_size={batch_size} must be a multiple of the {dp} "
                             f"data-parallel devices of this process.")
        self.windows, self.batch_size, self.mesh = windows, batch_size, mesh
        self.variables = variables
        self.sharding = jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        self.fn = jax.jit(task.clip_features)

    def _run(self, clips: list[np.ndarray]):
        """Dispatch one batch (padded to batch_size); returns the outputs, not yet waited for."""
        batch = np.zeros((self.batch_size,) + clips[0].shape, np.uint8)
        batch[:len(clips)] = np.stack(clips)
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(RULES):
            return self.fn(self.variables, jax.device_put(batch, self.sharding))

    def run(self, items: Iterator[tuple[dict, str]], on_done, on_bad) -> None:
        """items: (example, output path) pairs. on_done(pending) for each finished video,
        on_bad(example, reason) for each one that could not be read (its clips dropped)."""
        rows: list[tuple[_Pending, int]] = []
        clips: list[np.ndarray] = []
        in_flight = None  # (outputs, rows) of the batch dispatched last

        def collect(flight) -> None:
            outputs, batch_rows = flight
            host = jax.tree.map(np.asarray, outputs)
            for r, (p, k) in enumerate(batch_rows):
                if p.failed:
                    continue
                for name, value in host.items():
                    if name not in p.outputs:
                        p.outputs[name] = np.zeros((len(p.times),) + value.shape[1:], np.float32)
                    p.outputs[name][k] = value[r]
                p.filled += 1
                if p.filled == len(p.times):
                    on_done(p)

        def flush() -> None:
            nonlocal in_flight, rows, clips
            flight = (self._run(clips), rows)
            rows, clips = [], []
            if in_flight is not None:  # the device works on the new batch meanwhile
                collect(in_flight)
            in_flight = flight

        for example, path in items:
            try:
                video = builders.open_video(example)
            except robust.LOAD_ERRORS as e:
                on_bad(example, robust.reason(e))
                continue
            with video:
                p = _Pending(_text(example["video_id"]), path,
                             self.windows.times(video.times, video.fps), float(video.fps),
                             float(video.duration), video.num_frames)
                clip_iter = video_clips(video, self.windows)
                for k in range(len(p.times)):
                    try:
                        clip = next(clip_iter)
                    except robust.LOAD_ERRORS as e:  # damaged part way: its clips are dropped
                        p.failed = True
                        on_bad(example, robust.reason(e))
                        break
                    rows.append((p, k))
                    clips.append(clip)
                    if len(clips) == self.batch_size:
                        flush()
        if clips:
            flush()
        if in_flight is not None:
            collect(in_flight)


def dataset_dir(workdir: str, name: str) -> str:
    """Where `pack` writes the dataset named `name` (TFDS: <data_dir>/<builder>/<config>/<version>)."""
    return os.path.join(workdir, "video_features", name, str(VideoFeatures.VERSION))


def part_path(workdir: str, split: str, index: int) -> str:
    """Where the features of a split's `index`-th video are kept until packed."""
    return os.path.join(workdir, "parts", split, f"{index:08d}.npz")


def save_part(p: _Pending, npy_dir: str | None = None) -> None:
    """A finished video's outputs -> its part file (and npy_dir/<video>.npy)."""
    _save_atomic(p.path, video_id=np.asarray(p.video_id), times=p.times,
                 fps=np.float32(p.fps), duration=np.float32(p.duration),
                 num_frames=np.int32(p.num_frames), **p.outputs)
    if npy_dir is not None:
        os.makedirs(npy_dir, exist_ok=True)
        np.save(os.path.join(npy_dir, file_name(p.video_id) + ".npy"), p.outputs["features"])


class VideoFeatures(tfds.core.GeneratorBasedBuilder):
    """Clip features of untrimmed videos (internvideo_jax/localization/features.py), one record
    per video: video_id, features (N, C) float32, times (N,) float32 seconds, scores (N, K) when
    the encoder had a classifier, fps, duration (seconds), num_frames."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, parts: dict[str, list[str]], **kwargs):
        self._parts = parts  # split -> part files in record order
        with np.load(next(p for files in parts.values() for p in files)) as first:
            self._dims = {k: first[k].shape[1] for k in ("features", "scores") if k in first}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {"video_id": tfds.features.Text(),
                    "times": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                    "fps": tfds.features.Scalar(dtype=np.float32),
                    "duration": tfds.features.Scalar(dtype=np.float32),
                    "num_frames": tfds.features.Scalar(dtype=np.int32)}
        for name, dim in self._dims.items():
            features[name] = tfds.features.Tensor(shape=(None, dim), dtype=np.float32)
        return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                     features=tfds.features.FeaturesDict(features),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(files) for split, files in self._parts.items()}

    def _generate_examples(self, files: list[str]):
        for i, path in enumerate(files):
            with np.load(path) as z:
                record = {k: z[k] for k in z.files}
            record["video_id"] = str(record["video_id"])
            yield i, record


def pack(workdir: str, name: str, parts: dict[str, list[str]], info: dict) -> str:
    """The part files -> workdir/video_features/<name>/1.0.0 (rebuilt when the parts changed),
    with `info` (checkpoint, windows, the classifier's class names) as feature_info.json; returns
    that directory."""
    ids = {split: [str(np.load(p)["video_id"]) for p in files] for split, files in parts.items()}
    builder = VideoFeatures(parts=parts, config=tfds.core.BuilderConfig(name=name),
                            data_dir=workdir, file_format="array_record")
    out = builder.data_dir
    index = os.path.join(out, INDEX_FILE)
    if os.path.exists(index):
        with open(index) as f:
            if json.load(f) == ids:
                return out
        shutil.rmtree(out)
        builder = VideoFeatures(parts=parts, config=tfds.core.BuilderConfig(name=name),
                                data_dir=workdir, file_format="array_record")
    builder.download_and_prepare()
    with open(os.path.join(out, FEATURE_INFO), "w") as f:
        json.dump(info, f, indent=1)
    with open(index, "w") as f:  # last: its presence marks a complete dataset
        json.dump(ids, f)
    return out


def read_info(path: str) -> dict:
    """feature_info.json of a packed dataset (how its features were extracted)."""
    with open(os.path.join(path, FEATURE_INFO)) as f:
        return json.load(f)


def open_dataset(path: str) -> tuple[dict, dict]:
    """A packed feature dataset -> ({video_id: (split, index)}, {split: random-access source})."""
    index = os.path.join(path, INDEX_FILE)
    if not os.path.exists(index):
        raise FileNotFoundError(
            f"{path} is not a clip-feature dataset (no {INDEX_FILE}): give the directory that "
            f"--mode=extract_clip_features printed (<workdir>/video_features/<name>/1.0.0).")
    with open(index) as f:
        ids = json.load(f)
    builder = tfds.builder_from_directory(path)
    where = {vid: (split, i) for split, vids in ids.items() for i, vid in enumerate(vids)}
    return where, {split: builder.as_data_source(split) for split in ids}
