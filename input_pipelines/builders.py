"""grain pipelines per task: source -> shard -> shuffle -> decode/sample/augment -> batch.

Elements stay uint8 until the accelerator: normalisation happens inside the jitted step.
Randomness is per element (grain random_map): the seed and the element's position in the stream
fully determine its frames, crop and mask, so a restored iterator replays exactly.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from input_pipelines import decode, masking, robust, sampling, sources, transforms


@dataclasses.dataclass(frozen=True)
class PretrainClip:
    """A VideoMAE pretraining example: dense sampling, multi-scale crop, optional flip, tube mask.

    With num_repeats = k > 1 (repeated augmentation, InternVideo's num_sample), the clip is decoded
    once and k independently cropped/flipped/masked views are made from the decoded frames.
    Output: {'video': (k, T, S, S, 3) uint8, 'mask': (k, N) bool}; the pipeline adds 'skipped' and
    'skipped_ids' (see robust.py).
    """

    num_frames: int
    stride: int
    crop_size: int
    flip: bool
    token_grid: tuple[int, int, int]
    mask_ratio: float
    num_repeats: int = 1
    short_video: str = "clamp"  # see sampling.dense_indices

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        num_frames = int(example["num_frames"]) or decode.probe(example["video"])["num_frames"]
        idx = sampling.dense_indices(num_frames, self.num_frames, self.stride, rng,
                                     self.short_video)
        frames = decode.decode_video_frames(example["video"], idx)  # T frames, not yet RGB
        videos, masks = [], []
        for _ in range(self.num_repeats):
            box = transforms.multi_scale_crop_box(frames[0].width, frames[0].height,
                                                  self.crop_size, rng)
            clip = transforms.scaled_crop(frames, box, self.crop_size)  # (T, S, S, 3)
            if self.flip:
                clip = transforms.random_flip(clip, rng)
            videos.append(np.ascontiguousarray(clip))
            masks.append(masking.tube_mask(self.token_grid, self.mask_ratio, rng))  # (N,)
        return {"video": np.stack(videos), "mask": np.stack(masks)}


def stack_views(elements: list[dict]) -> dict:
    """grain batch_fn: B/k elements of k views -> one batch of B clips, views of a video adjacent.

    'video' (B, T, S, S, 3), 'mask' (B, N); the host-only bad-video fields go with the first view
    of each video (zeros / '' for the others), so they are counted once per video.
    """
    k = elements[0]["video"].shape[0]
    first = np.zeros(k, bool)
    first[0] = True
    return {
        "video": np.concatenate([e["video"] for e in elements]),
        "mask": np.concatenate([e["mask"] for e in elements]),
        "skipped": np.concatenate([np.where(first, e["skipped"], 0).astype(np.int32)
                                   for e in elements]),
        "skipped_ids": np.concatenate([np.where(first, e["skipped_ids"], "")
                                       for e in elements]),
    }


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


def pretrain_dataset(data, *, seed: int, local_batch: int, token_grid: tuple[int, int, int],
                     mask_ratio: float, process_index: int = 0, process_count: int = 1,
                     start_step: int = 0) -> tuple[grain.IterDataset, int]:
    """Infinite stream of VideoMAE pretraining batches for this process.

    Args:
      data: the config's `data` section (dataset, split, data_dir, num_frames, stride, crop_size,
        flip, num_workers).
      local_batch: examples per batch on this process (global batch / process count).
      start_step: begin where `start_step` batches end: batches are pure functions of their
        position (index stream + per-position rng), so this replays exactly what an uninterrupted
        run would have read next, whatever the worker count.
    Returns:
      (dataset, examples per epoch on this process). Every epoch is a fresh permutation of this
      process's shard; batches may straddle two epochs (the stream is infinite). With repeated
      augmentation (data.num_repeats = k) a batch holds local_batch / k videos, k views each; the
      epoch size is then counted in clips (videos x k), so an epoch still shows every video once.
    """
    source = sources.open_source(data.dataset, data.split, data.data_dir or None,
                                 video_root=data.video_root or None,
                                 labels_path=data.labels or None)
    ds, epoch_size = index_stream(len(source), seed, process_index, process_count)
    k = data.num_repeats
    if local_batch % k:
        raise ValueError(f"The local batch {local_batch} is not divisible by data.num_repeats={k} "
                         f"(repeated augmentation): make batch_size / processes a multiple of {k}.")
    if epoch_size < local_batch // k:
        raise ValueError(f"The shard of {data.dataset}:{data.split} on this process has "
                         f"{epoch_size} videos, fewer than the {local_batch // k} videos a batch "
                         f"needs.")
    clip = PretrainClip(data.num_frames, data.stride, data.crop_size, data.flip, tuple(token_grid),
                        mask_ratio, k, data.short_video)
    ds = ds.random_map(robust.SkipBadVideos(source, clip))  # bad videos replaced and counted
    # Batches are formed here, on the random-access dataset: batch j is a pure function of j, so
    # the batches do not depend on the worker count (workers take whole batches in turn) and a run
    # can restart at any step by slicing.
    ds = ds.batch(local_batch // k, drop_remainder=True, batch_fn=stack_views)
    ds = ds[start_step:]
    # Decode threads in this process (workers = 0) or per worker process; a short prefetch buffer
    # keeps memory bounded (grain's default buffer holds 500 elements).
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data.num_threads,
                                              prefetch_buffer_size=data.prefetch_batches))
    if data.num_workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers))
    return it, epoch_size * k
