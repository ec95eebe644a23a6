r"""The demo: every stage of InternVideo, tiny, on the embedded dataset, with real training.

  python -m internvideo_jax.demo --workdir workdirs/demo [--stages pretrain,finetune,multimodal]

Stages (each a normal run in its own workdir, resumable; a finished stage is not retrained):
  pretrain    masked video pretraining (experiments/videomae_pretrain.py:tiny) -> WORKDIR/pretrain
  finetune    action recognition from it (experiments/finetune.py:tiny), evaluated with 2 clips
              x 3 crops on the validation split -> WORKDIR/finetune
  multimodal  video-text contrastive + caption pretraining (experiments/mm_pretrain.py:tiny),
              then retrieval and zero-shot classification on the validation split
              -> WORKDIR/multimodal
At the end it prints one summary: loss before/after pretraining, fine-tuned top-1, retrieval R@1
and zero-shot top-1 next to chance. Each stage is also runnable alone with
`python -m internvideo_jax.main --config <its config> --workdir <its workdir>`.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags, logging

STAGES = ("pretrain", "finetune", "multimodal")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "Parent directory of the stages.")
_STAGES = flags.DEFINE_list("stages", list(STAGES), f"Which of {STAGES} to run, in order.")
_STEPS = flags.DEFINE_integer("steps", 0, "Override every stage's total_steps (0: presets).")


def stage_config(stage: str, workdir: str, steps: int = 0):
    if stage == "pretrain":
        from experiments.videomae_pretrain import get_config
        c = get_config("tiny")
    elif stage == "finetune":
        from experiments.finetune import get_config
        c = get_config("tiny")
        c.init_from = os.path.join(workdir, "pretrain")
    elif stage == "multimodal":
        from experiments.mm_pretrain import get_config
        c = get_config("tiny")
    else:
        raise ValueError(f"Unknown demo stage {stage!r}; choose from {STAGES}.")
    if steps:
        c.total_steps = steps
    return c


def summary(workdir: str) -> dict:
    """The headline numbers of the finished stages, from their metrics.jsonl."""
    from internvideo_jax.metrics_writer import read_metrics
    out = {}
    pre = os.path.join(workdir, "pretrain")
    if os.path.exists(os.path.join(pre, "metrics.jsonl")):
        losses = [r["loss"] for r in read_metrics(pre) if "loss" in r]
        out["pretrain_loss_first"] = losses[0]
        out["pretrain_loss_last"] = float(np.mean(losses[-3:]))
    ft = os.path.join(workdir, "finetune")
    if os.path.exists(os.path.join(ft, "metrics.jsonl")):
        evals = [r for r in read_metrics(ft) if "eval_top1" in r]
        if evals:  # classification accuracy is stored as a fraction
            out["finetune_top1_pct"] = 100 * evals[-1]["eval_top1"]
            out["finetune_top5_pct"] = 100 * evals[-1]["eval_top5"]
    mm = os.path.join(workdir, "multimodal")
    if os.path.exists(os.path.join(mm, "metrics.jsonl")):
        evals = [r for r in read_metrics(mm) if "eval_t2v_R@1" in r]
        if evals:  # retrieval and zero-shot metrics are stored in percent
            e = evals[-1]
            out.update({"multimodal_videos": e["eval_videos"], "multimodal_texts": e["eval_texts"],
                        "t2v_R@1_pct": e["eval_t2v_R@1"], "v2t_R@1_pct": e["eval_v2t_R@1"],
                        "dsl_t2v_R@1_pct": e["eval_dsl_t2v_R@1"],
                        "zero_shot_top1_pct": e["eval_zero_shot_top1"]})
    return out


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    from internvideo_jax.xla_cache import enable_compilation_cache
    enable_compilation_cache()
    from internvideo_jax import train
    for stage in _STAGES.value:
        print(f"==== demo stage: {stage} ====", flush=True)
        config = stage_config(stage, _WORKDIR.value, _STEPS.value)
        train.train(config, os.path.join(_WORKDIR.value, stage))
    result = summary(_WORKDIR.value)
    print("==== demo summary (chance: top-1 12.5% of 8 classes; R@1 1/videos) ====")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
