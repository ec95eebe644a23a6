"""Evaluation while training (config.evals): a tiny fine-tuning run logs its validation top-1
every 2 steps and keeps the best checkpoint; the logged numbers equal the offline evaluation
(--mode=evaluate) of the same weights."""
import json
import os

import pytest

from internvideo_jax import offline
from internvideo_jax.training import train
from tests.helpers import apply_overrides


def _config(data_dir, **overrides):
    from experiments.finetune import get_config
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir)
    c.eval.update(batch_size=8, num_clips=2, num_crops=1)
    c.update(batch_size=8, total_steps=4, log_every=1, checkpoint_every=2)
    c.optim.update(base_lr=0.05, warmup_epochs=0.0)
    return apply_overrides(c, overrides)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_periodic_evaluation_and_the_best_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = _config(data_dir, **{"evals.every_steps": 2, "evals.views": "single",
                                  "evals.keep_best": "eval_single_top1"})
    train.train(config, workdir, progress=False)
    periodic = {r["step"]: r["eval_single_top1"] for r in _records(workdir)
                if "eval_single_top1" in r}
    assert sorted(periodic) == [2, 4]  # every 2 steps, the last one at the end
    final = [r for r in _records(workdir) if "eval_top1" in r]
    assert [r["step"] for r in final] == [4]  # the full protocol at the end, as before
    best = json.load(open(tmp_path / "run" / "best.json"))
    first_best = max(periodic, key=lambda s: (periodic[s], -s))  # ties: the earlier step stays
    assert best == {"step": first_best, "metric": "eval_single_top1",
                    "value": periodic[first_best]}
    single = config.copy_and_resolve_references()
    with single.unlocked():
        single.eval.update(num_clips=1, num_crops=1)
    # the evaluator's number at step 2 is the offline evaluation of checkpoint 2 ...
    periodic_config = apply_overrides(single, {"init_from": f"{workdir}/checkpoints/2"})
    result = offline.evaluate(periodic_config, str(tmp_path / "eval_step2"))
    assert result["top1"] == periodic[2] and result["videos"] == 8
    # ... and the best folder holds the weights that scored best.json's value
    kept = offline.evaluate(apply_overrides(single, {"init_from": f"{workdir}/best"}),
                            str(tmp_path / "eval_best"))
    assert kept["top1"] == best["value"]


def test_an_evals_block_that_cannot_work_fails_at_start(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"evals.keep_best='eval_top1' needs evaluations to "
                                         r"compare: set evals.every_steps > 0"):
        train.train(_config(data_dir, **{"evals.keep_best": "eval_top1"}), str(tmp_path / "a"),
                    progress=False)
    with pytest.raises(ValueError, match=r"with evals.views='single' the metrics are logged as "
                                         r"eval_single_<name>"):
        train.train(_config(data_dir, **{"evals.every_steps": 2, "evals.views": "single",
                                         "evals.keep_best": "eval_top1"}),
                    str(tmp_path / "b"), progress=False)
    assert not os.path.exists(tmp_path / "a" / "metrics.jsonl")
