r"""VideoMAE fine-tuning for action recognition, evaluated with the multi-view protocol.

Presets: tiny, vit_b_k400, vit_b_ssv2, vit_b_ucf101 (the shared keys: `classification_config`,
used by experiments/finetune_uniformerv2.py and experiments/cma.py too).

  tiny        the demo: the tiny ViT on the embedded dataset's 8 motion classes (direction matters,
              so no flip), 8 frames, initialised from the demo's pretraining run (the encoder's
              weights do not depend on the frame count), 2 clips x 3 crops at test.
                python -m internvideo_jax.main --config experiments/finetune.py:tiny \
                  --config.init_from=workdirs/demo/pretrain --workdir workdirs/demo/finetune
              Prints eval_top1 on the validation split at the end (chance: 0.125). Measured: 0.48
              top-1 (6 views, 200 videos) after 300 steps, 4.5 min on 2 CPU cores (0.145 from a
              random initialisation); 0.46-0.545 across float-level differences (the attention
              kernel used in pretraining / fine-tuning, README).
  vit_b_k400  the reference recipe: 16 frames stride 4, 224, AdamW (0.9, 0.999) wd 0.05,
              lr 1e-3 x batch/256 (5e-4 at batch 128... scaled), layer decay 0.75, drop path 0.1,
              mixup 0.8 / cutmix 1.0 / switch 0.5, smoothing 0.1, RandAugment m7-n4, erasing 0.25,
              repeated aug 2, 5 warmup epochs, 75 epochs; test 5 clips x 3 crops.
              Published (VideoMAE ViT-B, 1600-epoch K400 pretraining): 81.5 top-1.
  vit_b_ssv2  TSN segment sampling, flip off, 40 epochs, test 2 clips x 3 crops. Published: 70.8.
  vit_b_ucf101  UCF101 split 1 (101 classes), batch 48, lr 1e-3, layer decay 0.7, 100 epochs,
              5 clips x 3 crops. Published (VideoMAE ViT-B, 3200-epoch UCF101 pretraining): 91.3.

Kinetics-710 (VideoMAE V2's supervised post-pretraining, UniFormerV2's / UMT's K710 stage: the
union of the K400/600/700 classes; input_pipelines/label_union.py has the rules), from the
Kinetics label files and annotation lists you have:
  python -m input_pipelines.label_map union --labels k400.txt,k600.txt,k700.txt \
    --names k400,k600,k700 --out k710/     # k710/labels.txt (710 names), k710/maps.json
    # --order label_map_k710.txt: VideoMAE V2's class order (its released K710 heads)
  python -m input_pipelines.label_map relabel --map k710/maps.json --source k400 \
    --annotations k400_train.csv --out k710/train_k400.csv   # likewise k600, k700: then
    # concatenate the lists (dropping duplicate videos, as the reference does)
  python -m internvideo_jax.main --config experiments/finetune.py:vit_b_k400 \
    --config.model.num_classes=710 --config.data.labels=k710/labels.txt \
    --config.data.dataset=csv:k710/train.csv ...
Evaluated on one release: the K400 validation list as it is (K400 indices or names) and
  --config.eval.label_subset=k710/maps.json:k400 --config.data.eval_dataset=csv:k400_val.csv
scores the 400 K400 columns of the 710 logits (internvideo_jax/evaluation/evaluate.py).

Any key can be overridden on the command line; a misspelt key fails.
"""
from ml_collections import config_dict

from experiments.defaults import data_config, run_config


def classification_config(task: str) -> config_dict.ConfigDict:
    """The keys every action-recognition task shares (data, augment, eval, optim, ...), at the
    tiny demo's values; c.model is the caller's. Unlocked."""
    c = run_config(task)  # init_from: a pretraining workdir or params checkpoint; '' = scratch
    # 8 frames: 4 x 8 x 8 = 256 VideoMAE tokens; stride 4 spans 29 frames (with stride 2, 15
    # frames, VideoMAE stayed near chance).
    c.data = data_config(num_frames=8, stride=4, crop_size=64)
    # Off for the demo: small random crops would often miss the moving shape that defines the
    # class (the paper presets switch them on).
    c.augment = config_dict.ConfigDict(dict(
        mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5, label_smoothing=0.1,
        randaugment_ops=0, randaugment_magnitude=7.0, erasing=0.0, min_crop_area=0.6))
    # label_subset: 'maps.json:SOURCE' scores a union-trained (K710) model on one source's
    # columns (input_pipelines/label_union.py); '' = the model's own classes.
    c.eval = config_dict.ConfigDict(dict(split="validation", num_clips=2, num_crops=3,
                                         batch_size=16, label_subset=""))
    c.batch_size = 16  # 800 demo videos: 50 steps an epoch
    c.num_epochs = 30.0
    c.optim.update(base_lr=1e-3, min_lr=1e-6, warmup_epochs=5.0, b1=0.9, b2=0.999, eps=1e-8,
                   weight_decay=0.05, grad_clip=0.0, layer_decay=0.75, ema_decay=0.0)
    c.checkpoint_every = 200
    return c


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    c = classification_config("videomae_finetune")
    # pos_embed_grid: the checkpoint's (t, h, w) token grid when frames/resolution differ from
    # it, e.g. (8, 14, 14) for a 16x224 checkpoint at 32x384; () = the same grid.
    c.model = config_dict.ConfigDict(dict(
        size="tiny", num_classes=8, drop_path_rate=0.1, dropout=0.0, dtype="float32",
        pos_embed_grid=(), remat="none",  # remat: none | full | dots | dots_no_batch
        scan_layers=False))  # scanned encoder layers; checkpoints of either layout load
    if preset == "tiny":
        # The tiny model and small data want a larger lr than the ViT-B recipe.
        c.num_epochs = 6.0
        c.optim.update(base_lr=0.02, min_lr=1e-4, warmup_epochs=0.5, layer_decay=0.9)
    elif preset in ("vit_b_k400", "vit_b_ssv2", "vit_b_ucf101"):
        ssv2, ucf = preset == "vit_b_ssv2", preset == "vit_b_ucf101"
        c.model.update(size="B", num_classes=174 if ssv2 else 101 if ucf else 400,
                       dtype="bfloat16")
        c.augment.update(mixup_alpha=0.8, cutmix_alpha=1.0, randaugment_ops=4, erasing=0.25,
                         min_crop_area=0.08)
        c.data.update(dataset="something_something_v2" if ssv2 else
                      "ucf101" if ucf else "kinetics400", num_frames=16,
                      crop_size=224, stride=4, sampler="segment" if ssv2 else "dense",
                      flip=not ssv2, num_workers=16, num_repeats=2)
        c.eval.update(num_clips=2 if ssv2 else 5, num_crops=3, batch_size=64)
        c.batch_size = 384
        c.num_epochs = 40.0 if ssv2 else 100.0 if ucf else 75.0
        c.optim.update(base_lr=5e-4 if ssv2 else 1e-3, layer_decay=0.7 if ucf else 0.75)
        if ucf:
            c.batch_size = 48
        c.log_every = 50
        c.checkpoint_every = 1000
    else:
        raise ValueError(f"Unknown preset {preset!r}; choose tiny, vit_b_k400, vit_b_ssv2 or "
                         f"vit_b_ucf101.")
    c.lock()
    return c
