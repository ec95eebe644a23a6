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
    """Decode a VideoMAE pretraining clip: dense sampling, multi-scale crop, optional flip, mask.

    Output: {'video': (T, S, S, 3) uint8, 'mask': (N,) bool}; the pipeline adds 'skipped' and
    'skipped_ids' (see robust.py).
    """

    num_frames: int
    stride: int
    crop_size: int
    flip: bool
    token_grid: tuple[int, int, int]
    mask_ratio: float

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        num_frames = int(example["num_frames"]) or decode.probe(example["video"])["num_frames"]
        idx = sampling.dense_indices(num_frames, self.num_frames, self.stride, rng)
        frames = decode.decode_frames(example["video"], idx)  # (T, H, W, 3)
        box = transforms.multi_scale_crop_box(frames.shape[2], frames.shape[1], self.crop_size, rng)
        frames = transforms.crop_and_resize(frames, box, self.crop_size)  # (T, S, S, 3)
        if self.flip:
            frames = transforms.random_flip(frames, rng)
        mask = masking.tube_mask(self.token_grid, self.mask_ratio, rng)  # (N,)
        return {"video": np.ascontiguousarray(frames), "mask": mask}


def shard_for_process(ds: grain.MapDataset, process_index: int,
                      process_count: int) -> grain.MapDataset:
    """Each JAX process reads a disjoint, equally sized interleaved slice of the source."""
    n = (len(ds) // process_count) * process_count  # drop the remainder: equal steps per process
    return ds[process_index:n:process_count]


def pretrain_dataset(data, *, seed: int, local_batch: int, token_grid: tuple[int, int, int],
                     mask_ratio: float, process_index: int = 0,
                     process_count: int = 1) -> tuple[grain.IterDataset, int]:
    """Infinite stream of VideoMAE pretraining batches for this process.

    Args:
      data: the config's `data` section (dataset, split, data_dir, num_frames, stride, crop_size,
        flip, num_workers).
      local_batch: examples per batch on this process (global batch / process count).
    Returns:
      (dataset, examples per epoch on this process). Every epoch is a fresh permutation of this
      process's shard; batches may straddle two epochs (the stream is infinite).
    """
    source = sources.open_source(data.dataset, data.split, data.data_dir or None,
                                 video_root=data.video_root or None,
                                 labels_path=data.labels or None)
    ds = shard_for_process(grain.MapDataset.range(len(source)), process_index, process_count)
    epoch_size = len(ds)
    if epoch_size < local_batch:
        raise ValueError(f"The shard of {data.dataset}:{data.split} on this process has "
                         f"{epoch_size} videos, fewer than the local batch {local_batch}.")
    ds = ds.seed(seed).shuffle().repeat(None)
    clip = PretrainClip(data.num_frames, data.stride, data.crop_size, data.flip, tuple(token_grid),
                        mask_ratio)
    ds = ds.random_map(robust.SkipBadVideos(source, clip))  # bad videos replaced and counted
    ds = ds.batch(local_batch, drop_remainder=True)
    # Decode threads in this process (workers = 0) or per worker process; a short prefetch buffer
    # of batches keeps memory bounded (grain's default buffer holds 500 elements).
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data.num_threads,
                                              prefetch_buffer_size=data.prefetch_batches))
    if data.num_workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers))
    return it, epoch_size
