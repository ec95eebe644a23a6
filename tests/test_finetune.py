"""Fine-tuning and multi-view evaluation."""
import jax
import numpy as np
import pytest

from internvideo_jax import evaluate, train
from internvideo_jax.checkpointing import load_params
from internvideo_jax.metrics_writer import read_metrics
from internvideo_jax.tasks import get_task
from tests.helpers import apply_overrides, tiny_config


def test_multi_view_scores_are_the_mean_of_per_view_softmax():
    # 2 videos x 3 views x 4 classes, by hand.
    probs = np.array([[[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]],
                      [[0.1, 0.1, 0.1, 0.7], [0.2, 0.2, 0.5, 0.1], [0.1, 0.1, 0.6, 0.2]]])
    scores = evaluate.video_scores(probs)
    np.testing.assert_allclose(scores, [[0.4, 1 / 3, 0.5 / 3, 0.1],
                                        [0.4 / 3, 0.4 / 3, 1.2 / 3, 1.0 / 3]])
    m = evaluate.accuracy_metrics(scores, np.array([0, 3]), num_classes=4)
    assert m["top1"] == 0.5  # video 0 -> class 0 (right), video 1 -> class 2 (wrong)
    assert m["top5"] == 1.0
    assert m["mean_class_accuracy"] == 0.5  # classes 0 and 3 present: 1.0 and 0.0


def test_top5_and_mean_class_accuracy_by_hand():
    scores = np.eye(6)[[0, 1, 2, 3, 4, 5, 0, 0]]  # predictions 0..5, then 0, 0
    labels = np.array([0, 1, 2, 3, 4, 5, 1, 1])
    m = evaluate.accuracy_metrics(scores, labels, num_classes=6)
    assert m["top1"] == 6 / 8
    np.testing.assert_allclose(m["mean_class_accuracy"], (1 + 1 / 3 + 1 + 1 + 1 + 1) / 6)


def _finetune_config(data_dir, init_from="", **overrides):
    from experiments.finetune import get_config
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir, num_frames=8)
    c.eval.update(batch_size=8, num_clips=2, num_crops=3)
    c.update(batch_size=8, total_steps=4, log_every=1, checkpoint_every=4, init_from=init_from)
    c.augment.update(mixup_alpha=0.8, cutmix_alpha=1.0, randaugment_ops=2, erasing=0.25)
    return apply_overrides(c, overrides)


def test_finetune_from_pretraining_loads_the_encoder_and_evaluates(data_dir, tmp_path):
    pre = str(tmp_path / "pre")
    train.train(tiny_config(data_dir, total_steps=2, checkpoint_every=2), pre, progress=False)
    ft = str(tmp_path / "ft")
    state = train.train(_finetune_config(data_dir, init_from=pre), ft, progress=False)
    pretrained, _ = load_params(pre)
    # Step 0 started from the pretrained encoder: compare a tensor the update barely moves
    # against its pretrained value relative to a fresh init's distance.
    task = get_task(_finetune_config(data_dir))
    fresh = task.init_variables(jax.random.key(0), task.init_batch(1))["params"]
    got = np.asarray(state.params["encoder"]["patch_embed"]["kernel"])
    want = pretrained["encoder"]["patch_embed"]["kernel"]
    fresh_k = np.asarray(jax.tree.leaves(fresh["encoder"]["patch_embed"]["kernel"])[0])
    assert np.abs(got - want).mean() < 0.1 * np.abs(fresh_k - want).mean()
    records = read_metrics(ft)
    final = records[-1]
    assert final["eval_videos"] == 8 and final["eval_views"] == 6
    assert 0.0 <= final["eval_top1"] <= final["eval_top5"] <= 1.0
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)


def test_pretrained_shape_mismatch_is_named(data_dir):
    task = get_task(_finetune_config(data_dir))
    params = jax.tree.map(np.asarray, task.init_variables(jax.random.key(0),
                                                          task.init_batch(1))["params"])
    params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                          is_leaf=lambda x: hasattr(x, "value"))
    bad = {"encoder": {"patch_embed": {"kernel": np.zeros((2, 16, 16, 3, 128)),
                                       "bias": np.zeros(128)}}}
    with pytest.raises(ValueError, match=r"pretrained patch_embed/kernel has shape "
                                         r"\(2, 16, 16, 3, 128\)"):
        task.load_pretrained(params, bad)
