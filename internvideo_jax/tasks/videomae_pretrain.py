"""VideoMAE masked-video pretraining: tube-masked clips in, norm-pixel MSE on masked tokens out.

model.decoder_mask_ratio > 0: VideoMAE V2's dual masking (the pipeline adds a running cell
'decoder_mask'; the decoder predicts only the positions it leaves, the loss is on the masked ones
among them: losses.dual_masked_reconstruction_loss). 0: VideoMAE V1."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from input_pipelines import builders, masking, normalization
from internvideo_jax.infra.flops import videomae_pretrain_flops
from internvideo_jax.models import architecture, videomae
from internvideo_jax.tasks.base import Task, normalized
from internvideo_jax.training import losses


class VideoMAEPretrainTask(Task):
    def __init__(self, config):
        m, d = config.model, config.data
        self.size = videomae.get_size(m.size)
        self.video_shape = (d.num_frames, d.crop_size, d.crop_size, 3)
        # Fails early, naming the fix, on frames not divisible by the tubelet / crop by the patch.
        self.grid = videomae.token_grid((1,) + self.video_shape, self.size)
        if not 0.0 < m.mask_ratio < 1.0:
            raise ValueError(f"model.mask_ratio must be in (0, 1), got {m.mask_ratio}.")
        if masking.num_masked((1,) + self.grid[1:], m.mask_ratio) == 0:
            raise ValueError(f"model.mask_ratio={m.mask_ratio} masks no token of a "
                             f"{self.grid[1]}x{self.grid[2]} grid: raise it.")
        self.patch = (self.size.tubelet, self.size.patch, self.size.patch)
        self.mean, self.std = (np.asarray(v, np.float32) for v in normalization.get(d.normalization))
        self.norm_pix_loss = m.norm_pix_loss
        self.data = d
        self.mask_ratio = m.mask_ratio
        self.decoder_mask_ratio = m.decoder_mask_ratio  # 0: every masked token decoded (V1)
        if self.decoder_mask_ratio:  # fails early, naming the fix (ratio, odd grid)
            masking.num_decoded(self.grid, self.decoder_mask_ratio)
        self._picture_clips = None  # pictures(): the fixed clips, decoded on first use
        self.model = videomae.VideoMAEPretrain(
            self.size, mask_ratio=m.mask_ratio, drop_path_rate=m.drop_path_rate,
            dtype=jnp.dtype(m.dtype), remat=m.remat,
            scan=m.scan_layers, decoder_mask_ratio=m.decoder_mask_ratio)

    @property
    def num_tokens(self) -> int:
        return int(np.prod(self.grid))

    def architecture(self) -> dict:
        """This model's description (models/architecture.py), stored in the run's config.json:
        a fine-tuning run from this one can take model.size=init_from."""
        return architecture.describe("videomae_pretrain", self.size,
                                     architecture.name_of(self.size, videomae.SIZES))

    def flops_per_example(self) -> float:
        """Forward FLOPs of one clip (internvideo_jax/infra/flops.py)."""
        shape = (1,) + self.video_shape
        return videomae_pretrain_flops(self.size, self.video_shape, self.model.num_masked(shape),
                                       self.model.num_decoded(shape))

    def init_batch(self, batch_size: int) -> dict:
        mask = np.zeros((batch_size, self.num_tokens), bool)
        mask[:, :self.model.num_masked((1,) + self.video_shape)] = True
        batch = {"video": np.zeros((batch_size,) + self.video_shape, np.uint8), "mask": mask}
        if self.decoder_mask_ratio:
            batch["decoder_mask"] = np.tile(masking.running_cell_mask(
                self.grid, self.decoder_mask_ratio, start=0), (batch_size, 1))
        return batch

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, self.normalize(batch["video"]), batch["mask"],
                               decoder_mask=batch.get("decoder_mask"))

    def normalize(self, video_uint8: jax.Array) -> jax.Array:
        """(B, T, H, W, 3) uint8 -> normalised, in the model's compute dtype."""
        return normalized(video_uint8, self.mean, self.std, self.model.dtype)

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool):
        decoder_mask = batch["decoder_mask"] if self.decoder_mask_ratio else None
        pred = self.model.apply({"params": params}, self.normalize(batch["video"]), batch["mask"],
                                deterministic=not train, decoder_mask=decoder_mask,
                                rngs={"dropout": rng})
        target = losses.norm_pixel_target(batch["video"].astype(jnp.float32) / 255.0, self.patch,
                                          normalize=self.norm_pix_loss)
        if decoder_mask is None:
            loss = losses.masked_reconstruction_loss(pred, target, batch["mask"])
        else:  # the masked tokens among the decoded ones
            loss = losses.dual_masked_reconstruction_loss(pred, target, batch["mask"],
                                                          decoder_mask)
        return loss, {"loss": loss}

    def pictures(self, variables, mesh, config, step: int, out_dir: str) -> dict[str, str]:
        """Reconstructions of the run's fixed clips (visualize.fixed_clips: the first
        config.pictures.videos of config.pictures.split, fixed masks), one forward on the mesh:
        out_dir/pictures/reconstruction_<video>_step<step>.png -> {'reconstruction/<video>':
        path} on process 0."""
        from internvideo_jax import visualize
        if self._picture_clips is None:  # decoded once per run
            self._picture_clips = visualize.fixed_clips(self, config)
        ids, videos, masks = self._picture_clips
        predictions = visualize.predict_batch(self, variables, videos, masks, mesh)
        if jax.process_index() != 0:
            return {}
        written = visualize.draw_reconstructions(self, self._picture_clips, predictions,
                                                 out_dir, step)
        return {f"reconstruction/{vid}": path for vid, path in written.items()}

    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        return builders.pretrain_dataset(
            self.data, seed=seed, local_batch=local_batch, token_grid=self.grid,
            mask_ratio=self.mask_ratio, process_index=process_index, process_count=process_count,
            start_step=start_step, decoder_mask_ratio=self.decoder_mask_ratio)
