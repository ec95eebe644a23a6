r"""The demo: every stage of InternVideo, tiny, on the embedded dataset, with real training.

  python -m internvideo_jax.demo --workdir workdirs/demo [--stages pretrain,finetune,...]

Stages (each a normal run in its own workdir, resumable; a finished stage is not retrained):
  pretrain      masked video pretraining (experiments/videomae_pretrain.py:tiny) -> pretrain/
  linear_probe  a linear classifier on the frozen pretrained encoder's features
                (internvideo_jax/linear_probe.py) -> linear_probe/
  finetune      action recognition from it (experiments/finetune.py:tiny), evaluated with 2 clips
                x 3 crops on the validation split -> finetune/
  multimodal    video-text contrastive + caption pretraining (experiments/mm_pretrain.py:tiny),
                then retrieval and zero-shot classification on the validation split
                -> multimodal/
  uniformerv2   action recognition from the multimodal video encoder
                (experiments/finetune_uniformerv2.py:tiny) -> uniformerv2/
  cma           Cross-Model Attention over the frozen finetune and uniformerv2 models
                (experiments/cma.py:tiny) -> cma/; the summary also gives the score-averaging
                ensemble of the two (internvideo_jax/ensemble.py), CMA's baseline
  video_qa      question answering from the multimodal run (experiments/video_qa.py:tiny):
                colour, shape and motion questions about the validation videos, per-type
                top-1 next to the majority answer -> video_qa/ (the multimodal stage also
                reports zero-shot multiple choice over the captions)
  localization  temporal action localization on the embedded untrimmed videos (8-16 s, one to
                three motions each): clip features from the finetune model -> clip_features/,
                the ActionFormer-style head (experiments/localization.py:tiny) -> localization/;
                the summary gives its mAP at tIoU 0.3/0.5/0.7 next to sliding-window
                classification + NMS over the same clips' scores (localization/baseline.py)
  ava           spatio-temporal action detection on embedded AVA-style videos (two or three
                shapes, each with its own motions, boxes at 1 s keyframes): the RoIAlign head on
                the finetune stage's VideoMAE encoder (experiments/ava.py:tiny) -> ava/; the
                summary gives its frame-mAP next to that classifier's whole-clip scores given to
                every box
  distill       unmasked-teacher distillation (UMT, experiments/umt.py:tiny): the multimodal
                stage's video tower, frozen, distilled into a student of the pretrain stage's
                size on the tokens it attends to -> distill/; then fine-tuned as the finetune
                stage (experiments/finetune.py:tiny, the same steps) -> distill_finetune/; the
                summary gives its top-1 next to the VideoMAE-pretrained finetune stage's
At the end it prints one summary: loss before/after pretraining, top-1 of every classifier,
retrieval R@1 and zero-shot top-1, next to chance. Each stage is also runnable alone (the
commands are in the experiments' docstrings).
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags, logging

STAGES = ("pretrain", "linear_probe", "finetune", "multimodal", "uniformerv2", "cma",
          "video_qa", "localization", "ava", "distill")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "Parent directory of the stages.")
_STAGES = flags.DEFINE_list("stages", list(STAGES), f"Which of {STAGES} to run, in order.")
_STEPS = flags.DEFINE_integer("steps", 0, "Override every stage's total_steps (0: presets); a "
                              "smoke run, which also evaluates classifiers on 1 clip x 1 crop.")


def stage_config(stage: str, workdir: str, steps: int = 0):
    if stage == "pretrain":
        from experiments.videomae_pretrain import get_config
        c = get_config("tiny")
    elif stage in ("finetune", "linear_probe"):
        from experiments.finetune import get_config
        c = get_config("tiny")
        c.init_from = os.path.join(workdir, "pretrain")
    elif stage == "uniformerv2":
        from experiments.finetune_uniformerv2 import get_config
        c = get_config("tiny")
        c.init_from = os.path.join(workdir, "multimodal")
    elif stage == "cma":
        from experiments.cma import get_config
        c = get_config("tiny")
        c.model.videomae_from = os.path.join(workdir, "finetune")
        c.model.uniformer_from = os.path.join(workdir, "uniformerv2")
    elif stage == "multimodal":
        from experiments.mm_pretrain import get_config
        c = get_config("tiny")
    elif stage == "video_qa":
        from experiments.video_qa import get_config
        c = get_config("tiny")
        c.init_from = os.path.join(workdir, "multimodal")
    elif stage == "ava":
        from experiments.ava import get_config
        from input_pipelines import synthetic_ava
        c = get_config("tiny")
        # the finetune stage's encoder: the baseline's classifier, so that the head's gain over
        # it is what the per-box RoIAlign adds (from the pretraining run: 23.6% frame-mAP)
        c.init_from = os.path.join(workdir, "finetune")
        files = synthetic_ava.files()
        c.data.update(labelmap=files["label_map"], ground_truth=files["validation"],
                      eval_exclusions=files["validation_exclusions"])
    elif stage == "distill":
        from experiments.umt import get_config
        from internvideo_jax.tasks.umt_distill import teacher_spec
        c = get_config("tiny")
        c.model.teachers = (teacher_spec(source=os.path.join(workdir, "multimodal"),
                                         layers=c.model.teachers[0]["layers"]),)
    elif stage == "distill_finetune":  # the second half of the distill stage
        from experiments.finetune import get_config
        c = get_config("tiny")  # the finetune stage's recipe and steps: comparable top-1
        c.init_from = os.path.join(workdir, "distill")
    elif stage == "clip_features":  # the first half of the localization stage
        from experiments.finetune import get_config
        c = get_config("tiny")
        c.init_from = os.path.join(workdir, "finetune")
        c.data.dataset = "demo_untrimmed"
        # the clips the finetune model was trained on: 8 frames 4 apart, 64 x 64
        c.features.update(splits="train,validation", clip_frames=c.data.num_frames,
                          frame_step=c.data.stride, size=c.data.crop_size)
    elif stage == "localization":
        from experiments.localization import get_config
        from input_pipelines.sources import demo_untrimmed_ground_truth
        from internvideo_jax.localization.features import dataset_dir
        c = get_config("tiny")
        c.data.features = dataset_dir(os.path.join(workdir, "clip_features"), "features")
        c.data.ground_truth = demo_untrimmed_ground_truth()
    else:
        raise ValueError(f"Unknown demo stage {stage!r}; choose from {STAGES}.")
    if steps:  # a smoke run: every stage shortened, classifiers evaluated on 1 clip x 1 crop
        c.total_steps = steps
        if "eval" in c and "num_clips" in c.eval:
            c.eval.update(num_clips=1, num_crops=1)
    return c


def summary(workdir: str) -> dict:
    """The headline numbers of the finished stages, from their metrics.jsonl."""
    # deferred on purpose, as in main(): the absl entry point parses its flags without JAX
    from internvideo_jax.training.metrics_writer import read_metrics
    out = {}
    pre = os.path.join(workdir, "pretrain")
    if os.path.exists(os.path.join(pre, "metrics.jsonl")):
        losses = [r["loss"] for r in read_metrics(pre) if "loss" in r]
        out["pretrain_loss_first"] = losses[0]
        out["pretrain_loss_last"] = float(np.mean(losses[-3:]))
    probe = os.path.join(workdir, "linear_probe", "linear_probe.json")
    if os.path.exists(probe):
        with open(probe) as f:
            out["linear_probe_top1_pct"] = 100 * json.load(f)["top1"]
    dist = os.path.join(workdir, "distill")
    if os.path.exists(os.path.join(dist, "metrics.jsonl")):
        losses = [r["loss"] for r in read_metrics(dist) if "loss" in r]
        out["distill_loss_first"] = losses[0]
        out["distill_loss_last"] = float(np.mean(losses[-3:]))
    for stage in ("finetune", "uniformerv2", "cma", "distill_finetune"):
        path = os.path.join(workdir, stage)
        if os.path.exists(os.path.join(path, "metrics.jsonl")):
            evals = [r for r in read_metrics(path) if "eval_top1" in r]
            if evals:  # classification accuracy is stored as a fraction
                out[f"{stage}_top1_pct"] = 100 * evals[-1]["eval_top1"]
                out[f"{stage}_top5_pct"] = 100 * evals[-1]["eval_top5"]
    scores = [os.path.join(workdir, s, "scores_validation.npz") for s in ("finetune", "uniformerv2")]
    if all(os.path.exists(p) for p in scores):
        from internvideo_jax.ensemble import ensemble, load_scores
        from internvideo_jax.evaluation.evaluate import accuracy_metrics
        mean, info = ensemble([load_scores(p) for p in scores])
        out["ensemble_top1_pct"] = 100 * accuracy_metrics(mean, info["label"],
                                                          mean.shape[1])["top1"]
    qa = os.path.join(workdir, "video_qa")
    if os.path.exists(os.path.join(qa, "metrics.jsonl")):
        evals = [r for r in read_metrics(qa) if "eval_top1" in r]
        if evals:  # QA accuracy is stored as a fraction
            e = evals[-1]
            out.update({f"qa_{k.removeprefix('eval_')}_pct": 100 * v for k, v in e.items()
                        if k.startswith(("eval_top1", "eval_majority_top1"))})
    loc = os.path.join(workdir, "localization")
    if os.path.exists(os.path.join(loc, "metrics.jsonl")):
        evals = [r for r in read_metrics(loc) if "eval_average_mAP" in r]
        if evals:  # ActivityNet mAP, stored as a fraction
            out.update({f"localization_mAP@{t}_pct": 100 * evals[-1][f"eval_mAP@{t}"]
                        for t in ("0.30", "0.50", "0.70")})
    base = os.path.join(loc, "baseline_validation.json")
    if os.path.exists(base):
        with open(base) as f:
            mAP = json.load(f)["mAP"]
        out.update({f"sliding_window_mAP@{t}_pct": 100 * mAP[t] for t in ("0.30", "0.50", "0.70")})
    det = os.path.join(workdir, "ava")
    if os.path.exists(os.path.join(det, "metrics.jsonl")):
        evals = [r for r in read_metrics(det) if "eval_frame_mAP" in r]
        if evals:  # frame-mAP, stored as a fraction
            out["ava_frame_mAP_pct"] = 100 * evals[-1]["eval_frame_mAP"]
    det_base = os.path.join(det, "baseline_validation.json")
    if os.path.exists(det_base):
        with open(det_base) as f:
            out["whole_clip_frame_mAP_pct"] = 100 * json.load(f)["mAP"]
    mm = os.path.join(workdir, "multimodal")
    if os.path.exists(os.path.join(mm, "metrics.jsonl")):
        evals = [r for r in read_metrics(mm) if "eval_t2v_R@1" in r]
        if evals:  # retrieval and zero-shot metrics are stored in percent
            e = evals[-1]
            out.update({"multimodal_videos": e["eval_videos"], "multimodal_texts": e["eval_texts"],
                        "t2v_R@1_pct": e["eval_t2v_R@1"], "v2t_R@1_pct": e["eval_v2t_R@1"],
                        "dsl_t2v_R@1_pct": e["eval_dsl_t2v_R@1"],
                        "zero_shot_top1_pct": e["eval_zero_shot_top1"]})
            if "eval_mc_accuracy" in e:  # runs before multiple choice was added have none
                out["multiple_choice_pct"] = e["eval_mc_accuracy"]
    return out


def pictures_of(workdir: str) -> list[str]:
    """Every PNG the stages wrote (curves, confusion matrices, timelines, keyframes), by path."""
    found = []
    for root, _, files in os.walk(workdir):
        if os.sep + "checkpoints" in root:
            continue
        found += sorted(os.path.join(root, f) for f in files if f.endswith(".png"))
    return sorted(found)


def localization_stage(workdir: str, steps: int = 0) -> None:
    """Clip features of the untrimmed videos (resumable), the head, and the baseline's mAP on
    the same validation videos (localization/baseline_validation.json)."""
    from internvideo_jax import offline
    from internvideo_jax.localization import activitynet, baseline, features
    from internvideo_jax.tasks import get_task
    from internvideo_jax.training import train
    offline.extract_clip_features(stage_config("clip_features", workdir),
                                  os.path.join(workdir, "clip_features"))
    config = stage_config("localization", workdir, steps)
    out = os.path.join(workdir, "localization")
    train.train(config, out)
    task = get_task(config)
    sequences = task.sequences(config.eval.split)
    classes = features.read_info(config.data.features)["classes"]
    metrics = activitynet.evaluate_detection(task.ground_truth,
                                             baseline.predictions(sequences, classes),
                                             config.eval.split,
                                             activitynet.parse_tious(config.eval.tious))
    with open(os.path.join(out, f"baseline_{config.eval.split}.json"), "w") as f:
        json.dump(metrics, f, indent=1)


def ava_stage(workdir: str, steps: int = 0) -> None:
    """The detection head, then the whole-clip baseline from the finetune stage's classifier on
    the same keyframes (ava/baseline_validation.json)."""
    import jax
    from internvideo_jax import offline
    from internvideo_jax.infra import sharding
    from internvideo_jax.tasks import get_task
    from internvideo_jax.tasks.ava import whole_clip_baseline
    from internvideo_jax.training import train
    config = stage_config("ava", workdir, steps)
    out = os.path.join(workdir, "ava")
    train.train(config, out)
    mesh = sharding.make_mesh(config.mesh.to_dict())
    classifier_config = stage_config("finetune", workdir)
    classifier = get_task(classifier_config)
    variables, _ = offline.restore_variables(classifier, os.path.join(workdir, "finetune"), mesh)
    with jax.set_mesh(mesh):
        metrics = whole_clip_baseline(get_task(config), classifier, variables, mesh, config)
    with open(os.path.join(out, f"baseline_{config.eval.split}.json"), "w") as f:
        json.dump(metrics, f, indent=1, default=float)


def distill_stage(workdir: str, steps: int = 0) -> None:
    """Distil the multimodal video tower into a small student, then fine-tune the student."""
    from internvideo_jax.training import train
    train.train(stage_config("distill", workdir, steps), os.path.join(workdir, "distill"))
    train.train(stage_config("distill_finetune", workdir, steps),
                os.path.join(workdir, "distill_finetune"))


def main(argv) -> None:
    del argv
    unknown = [s for s in _STAGES.value if s not in STAGES]
    if unknown:
        raise app.UsageError(f"--stages: unknown {unknown}; choose from {', '.join(STAGES)}.")
    logging.set_verbosity(logging.WARNING)
    # Imports deferred on purpose: flag parsing (--help, --stages) loads no JAX or training
    # stack; linear_probe only when that stage runs.
    from internvideo_jax.infra.xla_cache import enable_compilation_cache
    enable_compilation_cache()
    from internvideo_jax.training import train
    for stage in _STAGES.value:
        print(f"==== demo stage: {stage} ====", flush=True)
        config = stage_config(stage, _WORKDIR.value, _STEPS.value)
        if stage == "linear_probe":
            from internvideo_jax import linear_probe
            linear_probe.run(config, os.path.join(_WORKDIR.value, stage))
        elif stage == "localization":
            localization_stage(_WORKDIR.value, _STEPS.value)
        elif stage == "ava":
            ava_stage(_WORKDIR.value, _STEPS.value)
        elif stage == "distill":
            distill_stage(_WORKDIR.value, _STEPS.value)
        else:
            train.train(config, os.path.join(_WORKDIR.value, stage))
    print("==== pictures ====")
    print("\n".join(pictures_of(_WORKDIR.value)) or "(none yet)")
    result = summary(_WORKDIR.value)
    print("==== demo summary (chance: top-1 12.5% of 8 classes; R@1 1/videos) ====")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
