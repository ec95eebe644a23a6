r"""Cross-Model Attention: a frozen VideoMAE and a frozen UniFormerV2, coordinated by gated
cross-attention blocks (internvideo_jax/models/cma.py; shared keys: experiments/finetune.py).

Presets:
  tiny      the demo: the demo's fine-tuned VideoMAE (WORKDIR/finetune) and fine-tuned UniFormerV2
            (WORKDIR/uniformerv2), one block in each direction, 8 frames stride 4 at 64px.
              python -m internvideo_jax.main --config experiments/cma.py:tiny \
                --config.model.videomae_from=workdirs/demo/finetune \
                --config.model.uniformer_from=workdirs/demo/uniformerv2 \
                --workdir workdirs/demo/cma
            Prints the trainable-parameter count at start and eval_top1 at the end; compare with
            `python -m internvideo_jax.ensemble` over the two models' scores files.
  k400      InternVideo's K400 setting: VideoMAE ViT-H (InternVideo's variant, 16x224) and
            UniFormerV2-L/14 (8x224), blocks in both directions. Published (CMA of the two,
            InternVideo paper): 91.1 top-1.
"""
from ml_collections import config_dict

from experiments.finetune import classification_config
from internvideo_jax.models.cma import DIRECTIONS


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    c = classification_config("cma")
    c.model = config_dict.ConfigDict(dict(
        videomae_size="tiny", uniformer_size="tiny", num_classes=8, videomae_from="",
        uniformer_from="", uniformer_normalization="clip", temporal_kernel=1, temporal_stride=1,
        local=False, directions=DIRECTIONS, depth=1, heads=4, dropout=0.0, head_loss_weight=1.0,
        pos_embed_grid=(), dtype="float32",
        scan_layers=False))  # the encoders are built per layer (True is refused)
    c.optim.update(layer_decay=1.0, weight_decay=0.05)
    if preset == "tiny":
        c.model.temporal_kernel = 3  # the demo's UniFormerV2 (experiments/finetune_uniformerv2.py)
        c.num_epochs = 4.0
        c.optim.update(base_lr=0.005, min_lr=1e-4, warmup_epochs=0.5)
    elif preset == "k400":
        c.model.update(videomae_size="H_internvideo", uniformer_size="L/14", num_classes=400,
                       uniformer_normalization="kinetics", temporal_kernel=3, temporal_stride=2,
                       heads=16, dropout=0.5, dtype="bfloat16")
        c.data.update(dataset="kinetics400", num_frames=16, crop_size=224, stride=4,
                      flip=True, num_workers=16)
        c.eval.update(num_clips=5, num_crops=3, batch_size=64)
        c.batch_size = 256
        c.num_epochs = 10.0
        c.optim.update(base_lr=1e-3, min_lr=1e-6, warmup_epochs=1.0)
        c.log_every = 50
        c.checkpoint_every = 1000
    else:
        raise ValueError(f"Unknown preset {preset!r}; choose tiny or k400.")
    c.lock()
    return c
