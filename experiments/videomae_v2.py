r"""VideoMAE V2 pretraining: dual masking (OpenGVLab/VideoMAEv2), on the VideoMAE pretraining task.

The encoder sees the 10% of tokens a 90% tube mask leaves; the decoder gets those and a mask token
at each position a running cell mask (model.decoder_mask_ratio 0.5: two of every 2x2 cell, the
pattern shifted one cell per time slice) leaves, half the clip, and the loss is on the masked
tokens among the decoded ones (input_pipelines/masking.py running_cell_mask, models/videomae.py
VideoMAEPretrain, training/losses.py dual_masked_reconstruction_loss). Any videomae_pretrain preset
takes dual masking with --config.model.decoder_mask_ratio=0.5.

Presets (pass after the colon): v2_tiny, v2_g14.

  v2_tiny  the tiny VideoMAE (patch 8) with dual masking on 16x64x64 clips of the embedded synthetic
           dataset, 2 CPU cores, a few minutes (300 steps, batch 16; 8x8x8 = 512 tokens, 456 masked,
           the decoder on the 56 visible + 256 running-cell positions instead of 512):
             python -m internvideo_jax.main --config experiments/videomae_v2.py:v2_tiny \
               --workdir workdirs/videomae_v2_tiny
           Measured (2 CPU cores, shared host, 2026-12-02; 300 steps in 2 min 15 s after
           compiling): logged loss (the mean of 10 steps) 1.17 at step 10, 0.92 at 30, 0.89 at
           100, 0.87 at 200, 0.88 at 300 (0.88 the mean of steps 201-300): down fast, then flat
           at ~0.88, as the V1 tiny preset (~1.2 -> ~0.87, its loss on every masked token; here
           on the 228 masked of the 256 decoded positions per clip).
  v2_g14   the paper's ViT-g/14 recipe (scripts/pretrain/vit_g_hybrid_pt.sh): width 1408, 40 layers,
           16 heads, MLP 6144 (ratio 48/11), patch 14, decoder 512 wide, 8 heads, 4 deep (MLP 2234:
           the encoder's ratio), 16 frames stride 4 at 224 (8x16x16 tokens), tube mask 0.9, running
           cell decoder mask 0.5, activation checkpointing (remat full), bf16, AdamW (0.9, 0.95) wd
           0.05, grad clip 0.02, 30 warmup of 300 epochs (x 4 views: the model zoo's "1200e"),
           4 views per decoded video (data.num_repeats, the reference's --num_sample 4), 64 GPUs x
           32 videos = 2048 videos = 8192 clips per step. The reference scales its lr by the
           videos of a step (6e-4 * 2048 / 256 = 4.8e-3, min 1e-5 * 8 = 8e-5); ours scales by
           batch_size, the clips, so base_lr is a quarter: 1.5e-4 * 8192 / 256 = 4.8e-3. Point
           data.dataset at the unlabeled hybrid list (1.35M clips in the paper):
             python -m internvideo_jax.main --config experiments/videomae_v2.py:v2_g14 \
               --config.data.dataset=csv:/data/hybrid_train.csv --workdir gs://bucket/vmae_v2_g
           Published: fine-tuned on K400, top-1 87.2 (16x5x3); 88.4 with the K710 post-pretraining.
           The reference's warmup starts at 1e-6 * 8, ours at 0.

Any key can be overridden: --config.batch_size=64 --config.data.num_workers=8; a misspelt key fails.
"""
from experiments import videomae_pretrain


def get_config(preset: str = "v2_tiny"):
    if preset == "v2_tiny":
        c = videomae_pretrain.get_config("tiny")  # the V1 tiny recipe, dual masking on
        c.model.decoder_mask_ratio = 0.5
        return c
    if preset == "v2_g14":
        c = videomae_pretrain.get_config("vit_h")  # 16 x 224, stride 4, bf16, fsdp, AdamW 0.95
        c.model.update(size="g", mask_ratio=0.9, decoder_mask_ratio=0.5, remat="full",
                       drop_path_rate=0.0)
        c.data.update(num_frames=16, stride=4, crop_size=224, num_repeats=4)
        c.batch_size = 64 * 32 * 4  # 64 GPUs x 32 videos x 4 views
        c.num_epochs = 300.0
        c.optim.update(base_lr=6e-4 / 4, min_lr=1e-5 / 4, warmup_epochs=30.0, b1=0.9, b2=0.95,
                       weight_decay=0.05, grad_clip=0.02)
        return c
    raise ValueError(f"Unknown preset {preset!r}; choose v2_tiny or v2_g14.")
