"""Tasks: what a training run optimises. A task = model + input pipeline + loss + metrics; the
methods every task has, and their defaults, are in tasks/base.py (Task). The trainer
(internvideo_jax/training/train.py) is shared.

TASKS names each task's class ('module:Class', imported when asked for): a new task is its module
plus one line here.
"""
from __future__ import annotations

import importlib

TASKS = {
    "videomae_pretrain": "internvideo_jax.tasks.videomae_pretrain:VideoMAEPretrainTask",
    "videomae_finetune": "internvideo_jax.tasks.videomae_finetune:VideoMAEFinetuneTask",
    "uniformerv2_finetune": "internvideo_jax.tasks.uniformerv2_finetune:UniFormerV2FinetuneTask",
    "cma": "internvideo_jax.tasks.cma:CMATask",
    "mm_pretrain": "internvideo_jax.tasks.mm_pretrain:MultimodalPretrainTask",
    "localization": "internvideo_jax.tasks.localization:LocalizationTask",
    "video_qa": "internvideo_jax.tasks.video_qa:VideoQATask",
    "ava": "internvideo_jax.tasks.ava:AVADetectionTask",
    "umt_distill": "internvideo_jax.tasks.umt_distill:UMTDistillTask",
}


def task_class(name: str):
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known: {', '.join(repr(t) for t in TASKS)}.")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_task(config):
    """The task object named by config.task."""
    return task_class(config.task)(config)
