"""Fine-tuning and multi-view evaluation."""
import jax
import numpy as np
import pytest

from internvideo_jax.evaluation import evaluate
from internvideo_jax.training import train
from internvideo_jax.training.checkpointing import load_params
from internvideo_jax.training.metrics_writer import read_metrics
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


def _uniformer_config(data_dir, **overrides):
    from experiments.finetune_uniformerv2 import get_config
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir)
    c.eval.update(batch_size=8, num_clips=1, num_crops=1)
    c.update(batch_size=8, total_steps=2, log_every=1, checkpoint_every=2)
    return apply_overrides(c, overrides)


def test_uniformerv2_batchnorm_statistics_are_model_state(data_dir, tmp_path):
    """Local UniBlocks: training updates the running statistics (threaded through the step and
    saved), and evaluation reads them (other statistics -> other logits)."""
    config = _uniformer_config(data_dir, **{"model.local": True, "grad_accum_steps": 2,
                                          "batch_size": 16})
    state = train.train(config, str(tmp_path / "uni"), progress=False)
    stats = jax.device_get(state.model_state["batch_stats"])
    means = [x for p, x in jax.tree_util.tree_leaves_with_path(stats) if "mean" in str(p[-1])]
    assert means and all(np.isfinite(m).all() for m in means)
    assert max(np.abs(m).max() for m in means) > 1e-3  # moved from their initial zeros
    task = get_task(config)
    video = np.random.default_rng(0).integers(0, 256, (2,) + task.video_shape).astype(np.uint8)
    variables = state.eval_variables()
    fresh = jax.tree.map(lambda x: np.zeros_like(x) if x.ndim else x, stats)
    a = np.asarray(task.logits_fn(variables, video))
    b = np.asarray(task.logits_fn({**variables, "batch_stats": fresh}, video))
    assert np.abs(a - b).max() > 1e-6
    from internvideo_jax.training.checkpointing import load_variables
    restored, meta = load_variables(str(tmp_path / "uni"))
    np.testing.assert_array_equal(jax.tree.leaves(restored["batch_stats"])[0],
                                  jax.tree.leaves(stats)[0])
    assert meta["protocol"]["normalization"] == "clip"


def test_uniformerv2_from_multimodal_resizes_positions_and_inflates_conv1(monkeypatch):
    """A 64px, 2-D conv1 multimodal encoder into an 80px classifier with a temporal kernel of 3:
    positions resized bicubically (models/pos_embed.py), conv1 inflated at the centre tap."""
    import dataclasses
    from internvideo_jax.models import multimodal, pos_embed, uniformerv2
    from internvideo_jax.tasks.uniformerv2_finetune import load_uniformerv2
    big = dataclasses.replace(uniformerv2.SIZES["tiny"], image_size=80)
    mm = multimodal.VideoTextModel(multimodal.get_size("tiny"), caption=False)
    src = jax.device_get(mm.init(jax.random.key(0), np.zeros((1, 2, 64, 64, 3), np.float32),
                                 np.zeros((1, 77), np.int32))["params"])
    src = jax.tree.map(lambda x: getattr(x, "value", x), src, is_leaf=lambda x: hasattr(x, "value"))
    model = uniformerv2.UniFormerV2Classifier(big, 5, temporal_kernel=3, temporal_stride=2)
    target = jax.tree.map(lambda x: getattr(x, "value", x), model.init(
        jax.random.key(1), np.zeros((1, 2, 80, 80, 3), np.float32))["params"],
        is_leaf=lambda x: hasattr(x, "value"))
    params, loaded, kept = load_uniformerv2(target, src)
    enc = src["visual"]["encoder"]
    np.testing.assert_allclose(params["backbone"]["positional_embedding"],
                               pos_embed.resize_cls_table(enc["positional_embedding"], (10, 10)),
                               rtol=1e-6)
    conv1 = np.asarray(params["backbone"]["conv1"])
    np.testing.assert_array_equal(conv1[1], enc["conv1"][0])
    assert not conv1[0].any() and not conv1[2].any()
    assert kept == ["proj_head/bias", "proj_head/kernel", "proj_norm/bias", "proj_norm/scale"]
    assert len(loaded) == len(jax.tree.leaves(enc))


def test_ema_follows_its_formula(data_dir):
    """ema_1 = d p_0 + (1 - d) p_1, ema_2 = d ema_1 + (1 - d) p_2 (p_k: weights after step k)."""
    import flax.linen as nn
    from internvideo_jax.infra import sharding
    config = _finetune_config(data_dir, **{"optim.ema_decay": 0.9, "optim.layer_decay": 1.0})
    task = get_task(config)
    mesh = sharding.make_mesh(config.mesh.to_dict())
    d = {"peak_lr": 0.01, "min_lr": 0.0, "warmup_steps": 0, "total_steps": 10}
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        tx, schedule = train.make_optimizer(config, d, None)
        state, _ = train.create_state(task, tx, mesh, jax.random.key(0), ema=True)
        step = jax.jit(train.make_train_step(task, tx, schedule, jax.random.key(1), 1, 0.9))
        rng = np.random.default_rng(0)
        batch = {"video": rng.integers(0, 256, (8,) + task.video_shape).astype(np.uint8),
                 "label": rng.integers(0, 8, 8).astype(np.int32)}
        p = [jax.device_get(state.params)]
        emas = []
        for _ in range(2):
            state, _ = step(state, batch)
            p.append(jax.device_get(state.params))
            emas.append(jax.device_get(state.ema_params))
    leaf = lambda t: np.asarray(t["head"]["kernel"], np.float64)  # noqa: E731
    want1 = 0.9 * leaf(p[0]) + 0.1 * leaf(p[1])
    np.testing.assert_allclose(leaf(emas[0]), want1, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(leaf(emas[1]), 0.9 * want1 + 0.1 * leaf(p[2]), rtol=1e-5,
                               atol=1e-9)
    assert np.abs(leaf(p[2]) - leaf(p[0])).max() > 0
    assert state.eval_variables()["params"] is state.ema_params
