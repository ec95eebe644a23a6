r"""Temporal action localization: an ActionFormer-style head on clip features of untrimmed videos.

Presets: tiny (the demo), thumos, anet. Two steps, each a normal run:
  1. clip features from a fine-tuned encoder (internvideo_jax/localization/features.py), e.g. the
     demo's VideoMAE over the embedded untrimmed videos (8 frames 4 apart, as it was fine-tuned):
       python -m internvideo_jax.main --mode=extract_clip_features \
         --config experiments/finetune.py:tiny --config.init_from=workdirs/demo/finetune \
         --config.data.dataset=demo_untrimmed --config.features.splits=train,validation \
         --config.features.clip_frames=8 --config.features.frame_step=4 \
         --config.features.size=64 --workdir workdirs/demo/clip_features
  2. the head:
       python -m internvideo_jax.main --config experiments/localization.py:tiny \
         --config.data.features=workdirs/demo/clip_features/video_features/features/1.0.0 \
         --config.data.ground_truth=$HOME/.cache/internvideo_jax/data/demo_untrimmed/default/1.0.0/ground_truth.json \
         --workdir workdirs/demo/localization
     (the demo's `localization` stage runs both). Prints eval_mAP@0.30 ... @0.70 and
     eval_average_mAP on the validation subset at the end; predictions_validation.json (the
     ActivityNet results format) in the workdir scores with
       python -m internvideo_jax.localization score --ground-truth GT.json \
         --predictions workdirs/demo/localization/predictions_validation.json
     Measured: README (demo section).

  thumos  ActionFormer's THUMOS-14 recipe: train on the validation videos, test on the test ones;
          features of 16 frames every 4; at most 2304 features per training sample (random
          truncation), window 19, arch (2, 2, 5), width 512; AdamW lr 1e-4 at batch 2, wd 0.05,
          grad clip 1.0, 5 warmup + 30 cosine epochs; 20 classes; class-wise Soft-NMS sigma 0.5, 200
          segments per video; mAP at tIoU 0.3:0.1:0.7. Published with InternVideo features:
          71.58 average mAP.
  anet    ActionFormer's ActivityNet-1.3 recipe: features resized to 192 per video, window 7,
          width 256; lr 1e-3 at batch 16, 5 warmup + 10 epochs, label smoothing 0.1; a
          class-agnostic head whose segments take the video's top-2 classes from external scores
          (eval.video_scores: a {'results': {video: [p]}, 'class': [names]} file, or 'features'
          for the extracting classifier's); Soft-NMS sigma 0.75, 100 segments; mAP at
          0.5:0.05:0.95. Published with InternVideo features: 39.00 average mAP.

Any key can be overridden on the command line; a misspelt key fails.
"""
from ml_collections import config_dict

from experiments.defaults import pipeline_config, run_config


def get_config(preset: str = "tiny") -> config_dict.ConfigDict:
    c = run_config("localization")
    c.data = pipeline_config(
        features="",  # the clip-feature dataset (--mode=extract_clip_features prints it)
        ground_truth="",  # ActivityNet-style JSON: database -> subset, duration, annotations
        split="training",  # the ground-truth subset trained on
        max_len=128,  # features per training sample (truncated / padded); a multiple of the
        # coarsest level's stride
        resize=False,  # True: every video's features resized to max_len (ActivityNet-style)
        trunc_thresh=0.5)  # random truncation keeps segments at least this much inside
    c.model = config_dict.ConfigDict(dict(
        size="demo",  # internvideo_jax/models/actionformer.py: SIZES
        num_classes=8,  # the ground truth's classes (checked)
        class_agnostic=False,  # True: one actionness class, labelled by eval.video_scores
        max_segments=8,  # ground-truth segments per video, padded
        dropout=0.0, path_drop=0.1, prior_prob=0.01, dtype="float32",
        regression_base=4.0,  # regression ranges (0, 4), (4, 8), ... (.., inf) feature steps
        center_sample_radius=1.5, init_loss_norm=100.0, loss_weight=1.0,
        label_smoothing=0.0))
    c.eval = config_dict.ConfigDict(dict(
        split="validation",  # the ground-truth subset evaluated
        tious="0.3:0.1:0.7",
        pre_nms_topk=2000, score_threshold=0.001,
        min_duration=0.05,  # feature steps; shorter candidates are dropped
        nms_sigma=0.5, max_segments=200,
        classwise_nms=True,  # False: one Soft-NMS over all classes
        video_scores="",  # '' | 'features' | a scores file: fuse video-level class scores
        video_top_k=2))  # classes per video in that fusion
    c.batch_size = 8  # 120 demo training videos: 15 steps an epoch
    c.num_epochs = 40.0
    c.optim.update(base_lr=1e-3 * 256 / 8,  # lr 1e-3 at batch 8 (base_lr is per 256 examples)
                   min_lr=1e-5, warmup_epochs=5.0, weight_decay=0.05, grad_clip=1.0)
    c.checkpoint_every = 200
    if preset == "tiny":
        pass
    elif preset == "thumos":
        c.data.update(split="validation", max_len=2304)
        c.model.update(size="thumos", num_classes=20, max_segments=64)
        c.eval.update(split="test")
        c.batch_size = 2
        c.num_epochs = 35.0
        c.optim.update(base_lr=1e-4 * 256 / 2, min_lr=1e-8)
    elif preset == "anet":
        c.data.update(max_len=192, resize=True)
        c.model.update(size="anet", num_classes=200, class_agnostic=True, max_segments=32,
                       init_loss_norm=200.0, label_smoothing=0.1)
        c.eval.update(tious="0.5:0.05:0.95", nms_sigma=0.75, max_segments=100,
                      classwise_nms=False, video_scores="features")
        c.batch_size = 16
        c.num_epochs = 15.0
        c.optim.update(base_lr=1e-3 * 256 / 16, min_lr=1e-8)
    else:
        raise ValueError(f"Unknown preset {preset!r}; choose tiny, thumos or anet.")
    c.lock()
    return c
