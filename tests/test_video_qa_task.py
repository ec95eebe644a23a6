"""The video QA task end to end on the small demo dataset's questions: the vocabulary stored with
the checkpoint, out-of-vocabulary answers counted wrong, the per-question predictions file and
the logged accuracy agreeing, the head's lr multiplier."""
import json
import os

import jax
import numpy as np
import pytest

from input_pipelines import answers
from tests.helpers import apply_overrides


def _config(data_dir, **overrides):
    from experiments.video_qa import get_config
    return apply_overrides(get_config("tiny"), {
        "data.dataset": "demo_qa/small", "data.data_dir": data_dir, "batch_size": 8,
        "total_steps": 3, "log_every": 1, "checkpoint_every": 3, "eval.batch_size": 8,
        "model.answer_vocabulary": 6, **overrides})


def test_vocabulary_and_lr_scales(data_dir):
    from internvideo_jax.tasks import get_task
    task = get_task(_config(data_dir))
    train_answers, _ = task.training_answers
    counts = {a: train_answers.count(a) for a in set(train_answers)}
    # the 6 most frequent training answers, ties by text (input_pipelines/answers.py)
    expected = sorted(counts, key=lambda a: (-counts[a], a))[:6]
    assert task.vocabulary == expected and task.model.num_answers == 6
    params = jax.eval_shape(lambda: task.init_variables(jax.random.key(0),
                                                        task.init_batch(1)))["params"]
    scales = task.lr_scales(params)
    flat = jax.tree_util.tree_leaves_with_path(scales)
    assert {s for p, s in flat if p[0].key == "vqa_classifier"} == {1.0}  # tiny: multiplier 1
    scaled = get_task(_config(data_dir, **{"model.head_lr_multiplier": 10.0})).lr_scales(params)
    by_top = {}
    for p, s in jax.tree_util.tree_leaves_with_path(scaled):
        by_top.setdefault(p[0].key, set()).add(s)
    assert by_top.pop("vqa_classifier") == {10.0} and all(v == {1.0} for v in by_top.values())


def test_training_evaluation_and_predictions_agree(data_dir, tmp_path):
    from internvideo_jax.training import train
    from internvideo_jax.training.metrics_writer import read_metrics
    config = _config(data_dir)
    work = str(tmp_path / "qa")
    train.train(config, work, progress=False)
    final = [r for r in read_metrics(work) if "eval_top1" in r][-1]
    stored = json.load(open(os.path.join(work, "config.json")))["protocol"]["vocabulary"]
    assert stored["sha256"] == answers.fingerprint(stored["answers"])
    rows = [json.loads(line) for line in open(os.path.join(work,
                                                          "predictions_validation.jsonl"))]
    assert len(rows) == final["eval_questions"] == 24  # 8 validation videos x 3 questions
    vocab = set(stored["answers"])
    oov = [r for r in rows if answers.normalize_answer(r["answer"]) not in vocab]
    assert final["eval_out_of_vocabulary"] == len(oov) > 0
    right = [r["predicted"] == answers.normalize_answer(r["answer"]) for r in rows]
    assert final["eval_top1"] == pytest.approx(np.mean(right))
    assert all(r["predicted"] in vocab for r in rows)
    assert not any(r["predicted"] == answers.normalize_answer(r["answer"]) for r in oov)
    kinds = {r["question_id"].rsplit("#", 1)[1] for r in rows}
    assert kinds == {"0", "1", "2"} and "eval_top1_colour" in final
    assert "eval_majority_top1_colour" in final
    # the demo's questions have candidates: multiple choice, recounted from 'chosen'
    assert all(r["chosen"] in vocab or r["chosen"] == "" for r in rows)
    mc_right = [r["chosen"] == answers.normalize_answer(r["answer"]) for r in rows]
    assert final["eval_mc_top1"] == pytest.approx(np.mean(mc_right))
    shape = [ok for r, ok in zip(rows, mc_right) if r["question_id"].endswith("#1")]
    assert final["eval_mc_top1_shape"] == pytest.approx(np.mean(shape))
