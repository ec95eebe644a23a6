r"""UniFormerV2 fine-tuning for action recognition (shared keys: experiments/finetune.py).

model.size: tiny, B/16, L/14, L/14@336, or init_from: the architecture an imported checkpoint
holds (its model.json), e.g. Something-Something's 8/16 global UniBlocks, the frozen variant:
  python -m internvideo_jax.convert import --src ssv2_b16_f16x224.pyth \
      --model uniformerv2_classifier --out /ckpt/ssv2_b16
  python -m internvideo_jax.main --config experiments/finetune_uniformerv2.py:l14_ssv2 \
      --config.model.size=init_from --config.init_from=/ckpt/ssv2_b16 ...

Presets:
  tiny      the demo: the multimodal demo's video tower (experiments/mm_pretrain.py:tiny) as the
            backbone, a fresh head, 8 frames stride 4 at 64px, CLIP normalisation (what the
            backbone was pretrained with), 2 clips x 3 crops.
              python -m internvideo_jax.main --config experiments/finetune_uniformerv2.py:tiny \
                --config.init_from=workdirs/demo/multimodal --workdir workdirs/demo/uniformerv2
            Prints eval_top1 on the validation split (chance 0.125). Measured (2 CPU cores,
            2026-12-02): 84.0 top-1 after 300 steps from the demo's multimodal tower (conv1
            over 3 frames: model.temporal_kernel=3, as mm_pretrain.py:tiny). From the earlier
            tower with a 2-D conv1, which had not learned the motions: 13.5 (2026-12-01), 30.0
            and 33.0 in earlier runs, 57.0 after 600 steps: learned late and erratically.
  b16_k400  UniFormerV2-B/16, 8 frames (TSN segments), 224px, global UniBlocks on layers 8-11,
            temporal conv1 (3, 2), mean/std 0.45/0.225, AdamW lr 4e-4 x batch/256... as the
            reference's K400 config (wd 0.05, cosine, grad clip 20), 4 clips x 3 crops; init
            from an imported checkpoint (`convert import --model uniformerv2_classifier`).
            Published (CLIP-400M, K710 post-pretraining, 8x224): 84.4 top-1.
  l14_ssv2  UniFormerV2-L/14 with local UniBlocks (BatchNorm state), 16 frames, flip off.
"""
from ml_collections import config_dict

from experiments.finetune import classification_config


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    c = classification_config("uniformerv2_finetune")
    c.model = config_dict.ConfigDict(dict(
        size="tiny", num_classes=8, temporal_kernel=1, temporal_stride=1, local=False,
        frozen=False,  # the frozen-backbone variant (L/14@336 "frozen" checkpoints)
        backbone_drop_path_rate=0.0, drop_path_rate=0.0, mlp_dropout=0.5, dropout=0.5,
        dtype="float32", remat="none",  # remat: none | full | dots | dots_no_batch
        scan_layers=False))  # backbone layers as nn.scan; checkpoints of either layout load
    c.optim.update(layer_decay=1.0)  # the reference uses none for UniFormerV2
    if preset == "tiny":
        # Without the reference's dropout (0.5 in the decoders' MLP and before the head) and with
        # a larger lr: with them (lr 0.01, 200 steps) the tiny model stayed at chance (12.5%).
        c.data.normalization = "clip"
        # the demo's multimodal tower: conv1 over 3 frames (experiments/mm_pretrain.py:tiny)
        c.model.update(mlp_dropout=0.0, dropout=0.0, temporal_kernel=3)
        c.num_epochs = 6.0
        c.optim.update(base_lr=0.04, min_lr=1e-4, warmup_epochs=0.5)
    elif preset in ("b16_k400", "l14_ssv2"):
        ssv2 = preset == "l14_ssv2"
        c.model.update(size="L/14" if ssv2 else "B/16", num_classes=174 if ssv2 else 400,
                       temporal_kernel=3, temporal_stride=2, local=ssv2, dtype="bfloat16",
                       backbone_drop_path_rate=0.0, drop_path_rate=0.0)
        c.data.update(dataset="something_something_v2" if ssv2 else "kinetics400",
                      num_frames=16 if ssv2 else 8, crop_size=224, sampler="segment",
                      flip=not ssv2, normalization="kinetics", num_workers=16)
        c.augment.update(mixup_alpha=0.0, cutmix_alpha=0.0, randaugment_ops=2,
                         randaugment_magnitude=9.0, min_crop_area=0.08)
        c.eval.update(num_clips=1 if ssv2 else 4, num_crops=3, batch_size=64)
        c.batch_size = 256
        c.num_epochs = 22.0 if ssv2 else 55.0
        c.optim.update(base_lr=4e-4, min_lr=1e-6, warmup_epochs=5.0, grad_clip=20.0)
        c.log_every = 50
        c.checkpoint_every = 1000
    else:
        raise ValueError(f"Unknown preset {preset!r}; choose tiny, b16_k400 or l14_ssv2.")
    c.lock()
    return c
