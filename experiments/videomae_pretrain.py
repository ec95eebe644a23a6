r"""VideoMAE masked-video pretraining (InternVideo's masked video encoder).

Presets (pass after the colon): tiny, vit_s, vit_b, vit_l, vit_h.

  tiny   the demo and CI: a 4-block ViT (patch 8) on 16x64x64 clips of the embedded synthetic
         dataset, 2 CPU cores, ~5 minutes. Expected: loss from ~1.2 (first 10 steps) to ~0.87.
           python -m internvideo_jax.main --config experiments/videomae_pretrain.py:tiny \
             --workdir workdirs/videomae_tiny
  vit_s/vit_b/vit_l/vit_h  the paper's recipe (spec: VideoMAE pretraining, InternVideo ViT-H):
         16 frames, stride 4 (K400), 224x224, 90% tube masking, AdamW (0.9, 0.95) wd 0.05,
         lr 1.5e-4 * batch / 256, min lr 1e-5 * batch / 256, 40 warmup epochs, 800 epochs (1600 for
         ViT-H with InternVideo's decoder), batch 2048 (ViT-B on 64 GPUs). Point data.dataset at a
         packed TFDS dataset:
           python -m internvideo_jax.main --config experiments/videomae_pretrain.py:vit_b \
             --config.data.dataset=/data/k400_tfds/kinetics400/1.0.0 --workdir gs://bucket/vmae_b
         Published: ViT-B pretrained 800 epochs on K400, fine-tuned, K400 top-1 80.9 (16x5x3).

data.dataset: 'demo' (embedded), a TFDS name or prepared directory, or '<format>:<annotation file>'
to read video files directly (format list | csv | ssv2 | captions; data.video_root, data.labels).

Any key can be overridden: --config.batch_size=64 --config.data.num_workers=8; a misspelt key fails.
"""
from ml_collections import config_dict

from experiments.defaults import data_config, run_config


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    c = run_config("videomae_pretrain")
    c.model = config_dict.ConfigDict(dict(
        size="tiny", mask_ratio=0.9, drop_path_rate=0.0, norm_pix_loss=True, dtype="float32",
        remat="none",  # none | full | dots | dots_no_batch: what blocks keep for backward
        scan_layers=False,  # True: nn.scan over the blocks (compile time flat in depth)
        decoder_mask_ratio=0.0))  # > 0: VideoMAE V2 dual masking (experiments/videomae_v2.py)
    c.data = data_config(num_frames=16, stride=2, crop_size=64)
    c.batch_size = 16  # global, over all devices and processes
    c.num_epochs = 20.0
    c.optim.update(base_lr=1.5e-4, min_lr=1e-5, warmup_epochs=40.0, b1=0.9, b2=0.95, eps=1e-8,
                   weight_decay=0.05, grad_clip=0.0)

    if preset == "tiny":
        # 800 demo videos / batch 16 = 50 steps per epoch, 6 epochs = 300 steps. A small model needs
        # a far larger lr than the 1.5e-4 * 16 / 256 the linear rule gives.
        c.num_epochs = 6.0
        c.optim.base_lr = 0.03
        c.optim.min_lr = 1e-3
        c.optim.warmup_epochs = 0.5
        c.log_every = 10
        c.checkpoint_every = 100
        c.pictures.every_steps = 100  # reconstructions of 4 validation clips: pretrain/pictures/
    elif preset in ("vit_s", "vit_b", "vit_l", "vit_h"):
        c.model.size = {"vit_s": "S", "vit_b": "B", "vit_l": "L", "vit_h": "H_internvideo"}[preset]
        c.model.dtype = "bfloat16"
        c.data.update(dataset="kinetics400", num_frames=16, stride=4, crop_size=224, num_workers=16)
        c.batch_size = 2048
        c.num_epochs = 1600.0 if preset == "vit_h" else 800.0
        c.log_every = 50
        c.checkpoint_every = 1000
        c.mesh.update(data=-1, fsdp=1, tensor=1)
        if preset in ("vit_l", "vit_h"):
            c.mesh.update(data=1, fsdp=-1)  # shard parameters and optimizer state
    else:
        raise ValueError(f"Unknown preset {preset!r}; choose tiny, vit_s, vit_b, vit_l or vit_h.")
    c.lock()
    return c
