"""grain pipelines per task: source -> shard -> shuffle -> decode/sample/augment -> batch.

Elements stay uint8 until the accelerator: normalisation happens inside the jitted step.
Randomness is per element (grain random_map): the seed and the element's position in the stream
fully determine its frames, crop and mask, so a restored iterator replays exactly.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from input_pipelines import (answers, decode, masking, randaugment, robust, sampling, sources,
                             synthetic_videos, transforms, workers)
from internvideo_jax.text.tokenizer import get_tokenizer


def open_video(example: dict) -> decode.Video:
    """The example's encoded video, opened with its frame table (num_frames, times).

    A count stored by `pack` (verified by decoding) caps the table; sources that store none
    (file lists) give 0 and the table alone counts the frames."""
    return decode.Video(example["video"], int(example.get("num_frames", 0) or 0))


def dense_clip(video: decode.Video, clip_len: int, stride: int, sample_fps: float,
               rng: np.random.Generator, short_video: str) -> np.ndarray:
    """(clip_len,) frame indices of a dense clip: every `stride`-th frame, or, with sample_fps > 0,
    frames 1 / sample_fps seconds apart by presentation time (variable or mixed frame rates)."""
    if sample_fps:
        return sampling.dense_time_indices(video.times, clip_len, sample_fps, rng, short_video)
    return sampling.dense_indices(video.num_frames, clip_len, stride, rng, short_video)


@dataclasses.dataclass(frozen=True)
class PretrainClip:
    """A VideoMAE pretraining example: dense sampling (or, with sampler='segment', TSN segments:
    UMT's pretraining clips), multi-scale crop, optional flip, tube mask.

    With num_repeats = k > 1 (repeated augmentation, InternVideo's num_sample), the clip is decoded
    once and k independently cropped/flipped/masked views are made from the decoded frames.
    Output: {'video': (k, T, S, S, 3) uint8, 'mask': (k, N) bool}; the pipeline adds 'skipped' and
    'skipped_ids' (see robust.py). With decoder_mask_ratio > 0 (VideoMAE V2's dual masking) also
    'decoder_mask': (k, N) bool, True = not decoded (masking.running_cell_mask, its pointer start
    drawn per view after the view's tube mask); 0 draws nothing more, so V1 streams are unchanged.
    """

    num_frames: int
    stride: int
    crop_size: int
    flip: bool
    token_grid: tuple[int, int, int]
    mask_ratio: float
    num_repeats: int = 1
    short_video: str = "clamp"  # see sampling.dense_indices
    sample_fps: float = 0.0  # > 0: frames 1 / sample_fps s apart by time instead of `stride`
    decoder_mask_ratio: float = 0.0  # > 0: a running cell decoder mask per view (VideoMAE V2)
    sampler: str = "dense"  # dense | segment (a random frame in each of num_frames segments)

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        with open_video(example) as video:
            if self.sampler == "segment":
                idx = sampling.segment_indices(video.num_frames, self.num_frames, rng)
            else:
                idx = dense_clip(video, self.num_frames, self.stride, self.sample_fps, rng,
                                 self.short_video)
            frames = video.frames(idx)  # T frames, not yet RGB
            videos, masks, decoder_masks = [], [], []
            for _ in range(self.num_repeats):
                box = transforms.multi_scale_crop_box(*decode.display_size(frames[0]),
                                                      self.crop_size, rng)
                clip = transforms.scaled_crop(frames, box, self.crop_size)  # (T, S, S, 3)
                if self.flip:
                    clip = transforms.random_flip(clip, rng)
                videos.append(np.ascontiguousarray(clip))
                masks.append(masking.tube_mask(self.token_grid, self.mask_ratio, rng))  # (N,)
                if self.decoder_mask_ratio > 0:
                    decoder_masks.append(masking.running_cell_mask(
                        self.token_grid, self.decoder_mask_ratio, rng))  # (N,)
        out = {"video": np.stack(videos), "mask": np.stack(masks)}
        if decoder_masks:
            out["decoder_mask"] = np.stack(decoder_masks)
        return out


def stack_views(elements: list[dict]) -> dict:
    """grain batch_fn: B/k elements of k views -> one batch of B clips, views of a video adjacent.

    Array fields (k, ...) are concatenated to (B, ...); the host-only bad-video fields go with the
    first view of each video (zeros / '' for the others), so they are counted once per video.
    """
    k = len(next(v for key, v in elements[0].items() if key not in robust.HOST_KEYS))
    first = np.zeros(k, bool)
    first[0] = True
    out = {key: np.concatenate([e[key] for e in elements])
           for key in elements[0] if key not in robust.HOST_KEYS}
    out["skipped"] = np.concatenate([np.where(first, e["skipped"], 0).astype(np.int32)
                                     for e in elements])
    out["skipped_ids"] = np.concatenate([np.where(first, e["skipped_ids"], "") for e in elements])
    return out


@dataclasses.dataclass(frozen=True)
class ClassifyClip:
    """A fine-tuning example: dense or TSN-segment sampling, random resized crop, flip,
    RandAugment, random erasing (all the same for every frame). Output {'video': (1, T, S, S, 3)
    uint8, 'label': (1,) int32} (one view; the leading axis is the views axis of stack_views)."""

    num_frames: int
    stride: int
    crop_size: int
    sampler: str = "dense"  # dense (Kinetics) | segment (Something-Something)
    flip: bool = False
    randaugment: tuple[int, float] | None = (4, 7.0)  # (ops, magnitude); None = off
    erasing: float = 0.25
    short_video: str = "clamp"
    min_crop_area: float = 0.08  # random resized crop area range (min_crop_area, 1)
    sample_fps: float = 0.0  # dense sampler: > 0 samples by time (see dense_clip)

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        with open_video(example) as video:
            if self.sampler == "segment":
                idx = sampling.segment_indices(video.num_frames, self.num_frames, rng)
            else:
                idx = dense_clip(video, self.num_frames, self.stride, self.sample_fps, rng,
                                 self.short_video)
            frames = video.frames(idx)
            box = transforms.random_resized_crop_box(*decode.display_size(frames[0]), rng,
                                                     scale=(self.min_crop_area, 1.0))
            clip = transforms.scaled_crop(frames, box, self.crop_size)  # (T, S, S, 3)
        if self.flip:
            clip = transforms.random_flip(clip, rng)
        if self.randaugment:
            clip = randaugment.rand_augment(clip, rng, *self.randaugment)
        clip = transforms.random_erasing(clip, rng, self.erasing)
        return {"video": np.ascontiguousarray(clip)[None],
                "label": np.asarray([example["label"]], np.int32)}


def captions_of(example: dict) -> list[str]:
    """The captions of an example (stored joined by newlines; bytes or str)."""
    text = example["caption"]
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return [c for c in text.split("\n") if c.strip()]


def segment_crop(example: dict, rng: np.random.Generator, num_frames: int, crop_size: int,
                 min_crop_area: float) -> np.ndarray:
    """TSN segment sampling (a random frame in each of num_frames segments) and one random
    resized crop of the frames: (T, S, S, 3) uint8, the multimodal tasks' training clip."""
    with open_video(example) as video:
        idx = sampling.segment_indices(video.num_frames, num_frames, rng)
        frames = video.frames(idx)
        box = transforms.random_resized_crop_box(*decode.display_size(frames[0]), rng,
                                                 scale=(min_crop_area, 1.0))
        return transforms.scaled_crop(frames, box, crop_size)  # (T, S, S, 3)


@dataclasses.dataclass(frozen=True)
class CaptionClip:
    """A video-text pretraining example: TSN segment sampling (a random frame in each of T
    segments), a random resized crop, no flip (captions name directions), one of the video's
    captions drawn at random, tokenized. Output {'video': (1, T, S, S, 3) uint8,
    'text': (1, context_length) int32}. T=1 makes image-text examples from a video's frame."""

    num_frames: int
    crop_size: int
    min_crop_area: float = 0.5
    context_length: int = 77
    # hard negatives: NEGATIVE_CAPTIONS[negative_captions](caption, num_negatives, rng) -> texts,
    # given as 'negatives': (1, num_negatives, context_length) int32
    negative_captions: str = ""
    num_negatives: int = 0

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        clip = segment_crop(example, rng, self.num_frames, self.crop_size, self.min_crop_area)
        captions = captions_of(example)
        if not captions:
            raise ValueError(f"video {example.get('video_id', '?')!r} has no caption: multimodal "
                             f"training needs a captioned dataset (annotation format 'captions').")
        caption = captions[int(rng.integers(len(captions)))]
        tokenize = get_tokenizer(self.context_length)
        out = {"video": np.ascontiguousarray(clip)[None], "text": tokenize([caption])}  # (1, L)
        if self.num_negatives:
            texts = NEGATIVE_CAPTIONS[self.negative_captions](caption, self.num_negatives, rng)
            out["negatives"] = tokenize(texts)[None]  # (1, K, L)
        return out


# data.negative_captions: how a caption's hard negatives are made (CaptionClip)
NEGATIVE_CAPTIONS = {"demo_motion": synthetic_videos.motion_negatives}


@dataclasses.dataclass(frozen=True)
class QAClip:
    """A video QA training example (an example of qa.QuestionSource): the video sampled as
    CaptionClip samples it (TSN segments, a random resized crop, no flip: questions name
    directions), the question tokenized, the answer's vocabulary index (-1: outside it).
    Output {'video': (1, T, S, S, 3) uint8, 'question': (1, context_length) int32,
    'answer': (1,) int32}."""

    num_frames: int
    crop_size: int
    answer_index: dict  # normalised answer -> index (input_pipelines/answers.py)
    min_crop_area: float = 0.5
    context_length: int = 77

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        clip = segment_crop(example, rng, self.num_frames, self.crop_size, self.min_crop_area)
        return {"video": np.ascontiguousarray(clip)[None],
                **question_arrays(example, self.answer_index, self.context_length)}


def question_arrays(example: dict, answer_index: dict, context_length: int) -> dict:
    """{'question': (1, L) int32 CLIP ids, 'answer': (1,) int32 index, -1 outside the
    vocabulary} of a question example."""
    ids = get_tokenizer(context_length)([str(example["question"])])  # (1, L)
    return {"question": ids,
            "answer": np.asarray([answers.encode(example["answer"], answer_index)], np.int32)}


@dataclasses.dataclass(frozen=True)
class QAViews:
    """Test views of a question's video (EvalViews with one uniform clip, the centre crop) with
    the question: {'video': (1, T, S, S, 3) uint8, 'question': (L,) int32, 'label': the answer's
    index (-1 outside the vocabulary), 'index'}."""

    views: "EvalViews"
    answer_index: dict
    context_length: int = 77

    def _with_question(self, out: dict, example: dict | None) -> dict:
        if example is None:
            out["question"] = np.zeros(self.context_length, np.int32)
            return out
        q = question_arrays(example, self.answer_index, self.context_length)
        out["question"], out["label"] = q["question"][0], q["answer"][0]
        return out

    def __call__(self, example: dict, index: int) -> dict:
        return self._with_question(self.views(example, index), example)

    def blank(self, index: int) -> dict:
        return self._with_question(self.views.blank(index), None)


@dataclasses.dataclass(frozen=True)
class EvalViews:
    """Test-time views of one video: `num_clips` temporal clips x `num_crops` (1 = centre, 3 =
    along the long side) spatial crops after resizing the short side to crop_size.
    Output {'video': (V, T, S, S, 3) uint8, 'label': int32, 'index': int32} with V = clips x crops.
    """

    num_frames: int
    stride: int
    crop_size: int
    num_clips: int = 1
    num_crops: int = 1
    sampler: str = "dense"  # dense | segment | uniform
    sample_fps: float = 0.0  # dense sampler: > 0 spaces frames and clips by time

    def __call__(self, example: dict, index: int) -> dict:
        with open_video(example) as video:
            n = video.num_frames
            if self.sampler == "segment":  # TSN test views: the middle frame of each segment
                clips = [sampling.segment_indices(n, self.num_frames, None)] * self.num_clips
            elif self.sampler == "uniform":  # multimodal: linspace over the whole video
                clips = [sampling.uniform_indices(n, self.num_frames)] * self.num_clips
            elif self.sample_fps:
                clips = sampling.dense_time_test_views(video.times, self.num_frames,
                                                       self.sample_fps, self.num_clips)
            else:
                clips = sampling.dense_test_views(n, self.num_frames, self.stride,
                                                  self.num_clips)
            frames = video.frames(np.concatenate(clips))
            w, h = decode.display_size(frames[0])
            rw, rh = transforms.short_side_size(w, h, self.crop_size)
            boxes = transforms.three_crop_boxes(rw, rh, self.crop_size)
            boxes = boxes if self.num_crops == 3 else boxes[1:2]
            views = []
            for c in range(self.num_clips):
                clip_frames = frames[c * self.num_frames:(c + 1) * self.num_frames]
                for x, y, _, _ in boxes:  # crop boxes in resized coordinates -> original ones
                    box = (x * w / rw, y * h / rh, self.crop_size * w / rw, self.crop_size * h / rh)
                    views.append(transforms.scaled_crop(clip_frames, box, self.crop_size,
                                                        "BILINEAR"))
        return {"video": np.stack(views), "label": np.int32(example["label"]),
                "index": np.int32(index)}

    def blank(self, index: int) -> dict:
        """What __call__ returns, in zeros, for a video that could not be loaded."""
        views = self.num_clips * (3 if self.num_crops == 3 else 1)
        shape = (views, self.num_frames, self.crop_size, self.crop_size, 3)
        return {"video": np.zeros(shape, np.uint8), "label": np.int32(-1),
                "index": np.int32(index)}


def shard_for_process(ds: grain.MapDataset, process_index: int,
                      process_count: int) -> grain.MapDataset:
    """Each JAX process reads a disjoint, equally sized interleaved slice of the source."""
    n = (len(ds) // process_count) * process_count  # drop the remainder: equal steps per process
    return ds[process_index:n:process_count]


def index_stream(num_examples: int, seed: int, process_index: int,
                 process_count: int) -> tuple[grain.MapDataset, int]:
    """Infinite stream of source indices for this process, and its epoch size.

    Each process takes an interleaved slice of equal size (the remainder of num_examples /
    process_count is dropped, so every process runs the same number of steps); every epoch is a
    fresh permutation of that slice. Over the processes, one epoch is each kept example exactly once.
    """
    ds = shard_for_process(grain.MapDataset.range(num_examples), process_index, process_count)
    return ds.seed(seed).shuffle().repeat(None), len(ds)


def open_data_source(data):
    """The config's data source (TFDS dataset, demo, or annotation-listed files)."""
    return sources.open_source(data.dataset, data.split, data.data_dir or None,
                               video_root=data.video_root or None,
                               labels_path=data.labels or None)


def train_stream(data, clip, *, seed: int, local_batch: int, process_index: int = 0,
                 process_count: int = 1, start_step: int = 0, num_repeats: int = 1,
                 source=None) -> tuple[grain.IterDataset, int]:
    """Infinite stream of training batches for this process, for any per-video `clip` function.

    clip(example, rng) -> dict of (k, ...) arrays (k = num_repeats views of one video).
    Returns (dataset, examples per epoch on this process, counted in clips = videos x k).
    Every epoch is a fresh permutation of this process's shard; batches may straddle two epochs.
    start_step: begin where `start_step` batches end: batches are pure functions of their position
      (index stream + per-position rng), so this replays exactly what an uninterrupted run would
      have read next, whatever the worker count.
    source: a random-access source to read instead of data's videos (e.g. localization's feature
      sequences); `clip` takes its examples.
    """
    source = open_data_source(data) if source is None else source
    ds, epoch_size = index_stream(len(source), seed, process_index, process_count)
    k = num_repeats
    if local_batch % k:
        raise ValueError(f"The local batch {local_batch} is not divisible by data.num_repeats={k} "
                         f"(repeated augmentation): make batch_size / processes a multiple of {k}.")
    if epoch_size < local_batch // k:
        raise ValueError(f"The shard of {data.dataset}:{data.split} on this process has "
                         f"{epoch_size} videos, fewer than the {local_batch // k} videos a batch "
                         f"needs.")
    ds = ds.random_map(robust.SkipBadVideos(source, clip))  # bad videos replaced and counted
    # Batches are formed here, on the random-access dataset: batch j is a pure function of j, so
    # the batches do not depend on the worker count (workers take whole batches in turn) and a run
    # can restart at any step by slicing.
    ds = ds.batch(local_batch // k, drop_remainder=True, batch_fn=stack_views)
    ds = ds[start_step:]
    return _to_iter(ds, data), epoch_size * k


def _to_iter(ds: grain.MapDataset, data) -> grain.IterDataset:
    # Decode threads in this process (workers = 0) or per worker process; a short prefetch buffer
    # keeps memory bounded (grain's default buffer holds 500 elements).
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data.num_threads,
                                              prefetch_buffer_size=data.prefetch_batches))
    if data.num_workers > 0:
        # Workers end with this process, however it dies (kill -9, OOM killer): input_pipelines/
        # workers.py.
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers),
                            worker_init_fn=workers.exit_with_parent)
    return it


def pretrain_dataset(data, *, seed: int, local_batch: int, token_grid: tuple[int, int, int],
                     mask_ratio: float, process_index: int = 0, process_count: int = 1,
                     start_step: int = 0,
                     decoder_mask_ratio: float = 0.0) -> tuple[grain.IterDataset, int]:
    """VideoMAE pretraining batches {'video': (B, T, S, S, 3) uint8, 'mask': (B, N) bool, ...},
    and 'decoder_mask' (B, N) bool with decoder_mask_ratio > 0 (VideoMAE V2 dual masking)."""
    clip = PretrainClip(data.num_frames, data.stride, data.crop_size, data.flip, tuple(token_grid),
                        mask_ratio, data.num_repeats, data.short_video, data.sample_fps,
                        decoder_mask_ratio)
    return train_stream(data, clip, seed=seed, local_batch=local_batch,
                        process_index=process_index, process_count=process_count,
                        start_step=start_step, num_repeats=data.num_repeats)


def eval_dataset(data, views: EvalViews, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, source=None) -> tuple[grain.IterDataset, int]:
    """One pass over the split in order, each process a disjoint interleaved slice.

    The last batch is padded by repeating the split's last video, with 'valid' False on the
    padding, so every batch has the same shape; evaluation counts valid entries only. A video
    that cannot be loaded gives zeros and 'error' = '<file>\t<reason>' (else ''), logged once.
    Returns (dataset, number of videos on this process). source: a random-access source to read
    instead of data's videos (`views` takes its examples).
    """
    source = open_data_source(data) if source is None else source
    indices = grain.MapDataset.range(len(source))[process_index::process_count]
    n = len(indices)
    padded = -(-n // batch_size) * batch_size

    def load(i: int) -> dict:
        real = i < n
        index = int(indices[min(i, n - 1)])
        try:
            out = views(source[index], index)
            out["error"] = np.asarray("")
        except robust.LOAD_ERRORS as e:
            name = robust.source_name(source, index)
            robust.log_once(name, e)
            out = views.blank(index)
            out["error"] = np.asarray(f"{name}\t{robust.reason(e)}")
        out["valid"] = np.bool_(real)
        return out

    ds = grain.MapDataset.range(padded).map(load).batch(batch_size)
    return _to_iter(ds, data), n
