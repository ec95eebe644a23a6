r"""Spatio-temporal action detection, AVA-style: VideoMAE + the RoIAlign head (tasks/ava.py).

Presets: tiny (the demo), vit_b (the reference's AVA 2.2 recipe).

  tiny   the demo: the embedded AVA-style videos ('demo_ava': two or three shapes, each doing one
         or two of the 8 motions, boxes at 1 s keyframes; evaluation on jittered "detected" boxes
         scored >= 0.8), 8 frames 4 apart at 64 px (the whole frame resized at test), from the
         demo's fine-tuned VideoMAE encoder (the finetune stage); no flip (left and right are
         classes here):
           python -m internvideo_jax.demo --stages ava --workdir workdirs/demo
         (the stage fills data.labelmap / ground_truth from input_pipelines/synthetic_ava.files).
         Prints eval_frame_mAP at the end. Measured (2026-12-02, 300 steps, about 3.5 min on 2
         cores, 30 validation videos): 28.6% frame-mAP, against 24.9% for the finetune
         classifier's whole-clip scores given to every box; 23.6% from the pretraining run.
  vit_b  VideoMAE ViT-B AVA 2.2 fine-tuning as the reference (MCG-NJU/VideoMAE-Action-Detection):
         16 frames 4 apart, 224 crops of a 256 short side, flip, box jitter (0.2, 0.1, 0.1, 0.05),
         test on the whole frame (short side 256: set data.crop_size or the eval sizes to taste)
         with detected boxes >= 0.8, 80 classes, AdamW lr 2.5e-4 x batch / 256... layer decay
         0.75, drop path 0.2, 30 epochs; point data.dataset at the movies (a packed dataset or a
         file list) and data.boxes / eval_boxes / ground_truth / labelmap / exclusions at the
         AVA v2.2 files (data.time_offset=900 for the 15-minute cuts).

Any key can be overridden on the command line; a misspelt key fails.
"""
from ml_collections import config_dict

from experiments.defaults import data_config, run_config


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    c = run_config("ava")
    c.data = data_config(
        dataset="demo_ava", num_frames=8, stride=4, crop_size=64,  # stride: the frame rate
        boxes="",  # training ground truth (AVA CSV); '' where data.dataset gives keyframes
        eval_boxes="",  # the boxes evaluated on (a person detector's, AVA CSV with scores)
        ground_truth="",  # the evaluation's ground truth (AVA CSV)
        labelmap="",  # AVA label map pbtxt: the classes and their order
        exclusions="", eval_exclusions="",  # excluded-timestamps CSVs ('' = none)
        detection_threshold=0.8,  # eval boxes kept at this score or above
        time_offset=0.0)  # movie second at the stream's first frame (900: 15-minute cuts)
    c.model = config_dict.ConfigDict(dict(
        size="tiny", num_classes=8, max_boxes=4, drop_path_rate=0.1, dropout=0.0,
        dtype="float32", remat="none",  # remat: none | full | dots | dots_no_batch
        scan_layers=False))  # scanned encoder layers; checkpoints of either layout load
    c.augment = config_dict.ConfigDict(dict(
        flip=False, box_jitter=(0.2, 0.1, 0.1, 0.05), scale_range=(8 / 7, 8 / 7)))
    c.eval = config_dict.ConfigDict(dict(split="validation", batch_size=16))
    c.batch_size = 16
    c.num_epochs = 10.0
    c.optim.update(base_lr=1e-3, min_lr=1e-6, warmup_epochs=1.0, weight_decay=0.05,
                   layer_decay=0.75)
    if preset == "tiny":
        c.total_steps = 300
        c.optim.update(base_lr=0.02, min_lr=1e-4, warmup_epochs=0.5, layer_decay=0.9)
    elif preset == "vit_b":
        c.model.update(size="B", num_classes=80, max_boxes=32, drop_path_rate=0.2,
                       dtype="bfloat16")
        c.data.update(dataset="", num_frames=16, crop_size=224, num_workers=16)
        c.augment.update(flip=True)
        c.eval.update(batch_size=32)
        c.batch_size = 64
        c.num_epochs = 30.0
        c.optim.update(base_lr=2.5e-4 * 256 / 64)
        c.log_every = 50
        c.checkpoint_every = 1000
    else:
        raise ValueError(f"Unknown preset {preset!r}; choose tiny or vit_b.")
    c.lock()
    return c
