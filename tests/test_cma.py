"""Cross-Model Attention: identity at initialisation, frozen encoders, optimizer state, outputs."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from internvideo_jax.training import train
from internvideo_jax.convert.common import flatten
from internvideo_jax.models import uniformerv2, videomae
from internvideo_jax.tasks import get_task
from internvideo_jax.tasks.classification import to_unit_range
from tests.helpers import apply_overrides

K = 8


def _random(module, video, seed):
    params = module.init(jax.random.key(seed), video)["params"]
    params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                          is_leaf=lambda x: hasattr(x, "value"))
    # Random, non-zero everything (zero-initialised decoders and heads would hide mistakes).
    leaves, tree = jax.tree.flatten(params)
    rngs = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(r, x.shape)
                                     for x, r in zip(leaves, rngs)])


def _uniformer():
    """The tiny UniFormerV2 classifier with conv1 as the CMA preset builds it."""
    from experiments.cma import get_config
    kernel = get_config("tiny").model.temporal_kernel
    return uniformerv2.UniFormerV2Classifier(uniformerv2.get_size("tiny"), K,
                                             temporal_kernel=kernel)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Two saved classifiers with random weights: (videomae dir, uniformer dir, their params)."""
    root = tmp_path_factory.mktemp("encoders")
    video = jnp.zeros((1, 8, 64, 64, 3))
    vm = _random(videomae.VideoMAEClassifier(videomae.get_size("tiny"), K), video, 0)
    un = _random(_uniformer(), video, 2)
    paths = []
    for name, params in (("videomae", vm), ("uniformer", un)):
        path = str(root / name)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(path, params)
        paths.append(path)
    return paths[0], paths[1], vm, un


def _config(data_dir, encoders, **overrides):
    from experiments.cma import get_config
    c = get_config("tiny")
    c.model.update(videomae_from=encoders[0], uniformer_from=encoders[1])
    c.data.update(dataset="demo/small", data_dir=data_dir)
    c.eval.update(batch_size=8, num_clips=1, num_crops=3)
    c.update(batch_size=8, total_steps=3, log_every=1, checkpoint_every=3)
    return apply_overrides(c, overrides)


def test_at_initialisation_each_head_is_its_frozen_model(data_dir, encoders):
    task = get_task(_config(data_dir, encoders))
    params = jax.tree.map(lambda x: getattr(x, "value", x),
                          task.init_variables(jax.random.key(5), task.init_batch(2))["params"],
                          is_leaf=lambda x: hasattr(x, "value"))
    params, report = task.initial_params(params)
    assert "VideoMAE" in report and "UniFormerV2" in report
    video = jax.random.randint(jax.random.key(3), (2, 8, 64, 64, 3), 0, 256).astype(jnp.uint8)
    out, _ = task.apply({"params": params}, to_unit_range(video), train=False)
    vm_in, un_in = task.model_inputs(to_unit_range(video))
    want_m = videomae.VideoMAEClassifier(videomae.get_size("tiny"), K).apply(
        {"params": encoders[2]}, vm_in)
    want_u = _uniformer().apply({"params": encoders[3]}, un_in)
    np.testing.assert_array_equal(np.asarray(out["videomae"]), np.asarray(want_m))
    np.testing.assert_array_equal(np.asarray(out["uniformer"]), np.asarray(want_u))
    # The combination starts as the score-averaging ensemble.
    avg = 0.5 * (jax.nn.softmax(want_m) + jax.nn.softmax(want_u))
    np.testing.assert_allclose(np.exp(np.asarray(out["logits"])), np.asarray(avg), rtol=1e-5)


def test_trainable_set_is_blocks_heads_query_and_weights(data_dir, encoders):
    task = get_task(_config(data_dir, encoders))
    params = jax.eval_shape(lambda: task.init_variables(jax.random.key(0),
                                                        task.init_batch(1))["params"])
    mask = flatten(task.trainable_mask(jax.tree.map(
        lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value"))))
    tops = {p[:2] if p[0] in ("videomae", "uniformerv2") else p[:1] for p, t in mask.items() if t}
    assert tops == {("u_from_m_0",), ("m_from_u_0",), ("combine",), ("videomae", "fc_norm"),
                    ("videomae", "head"), ("uniformerv2", "proj_norm"),
                    ("uniformerv2", "proj_head"), ("uniformerv2", "backbone")}
    backbone = [p for p, t in mask.items() if t and p[:2] == ("uniformerv2", "backbone")]
    assert backbone == [("uniformerv2", "backbone", "temporal_cls_token")]
    assert not any(t for p, t in mask.items() if p[:2] == ("videomae", "encoder"))


def test_training_moves_only_the_trainable_and_keeps_no_state_for_the_frozen(
        data_dir, encoders, tmp_path):
    config = _config(data_dir, encoders)
    workdir = str(tmp_path / "cma")
    state = train.train(config, workdir, progress=False)
    task = get_task(config)
    mask = flatten(task.trainable_mask(state.params))
    after = flatten(jax.device_get(state.params))
    start = {**{("videomae",) + k: v for k, v in flatten(encoders[2]).items()},
             **{("uniformerv2",) + k: v for k, v in flatten(encoders[3]).items()}}
    frozen = [p for p, t in mask.items() if not t]
    assert len(frozen) > 50
    for p in frozen:  # bit-identical to the loaded encoders
        np.testing.assert_array_equal(after[p], np.asarray(start[p]), err_msg="/".join(p))
    moved = [("videomae", "head", "kernel"), ("u_from_m_0", "attn_gate"),
             ("uniformerv2", "backbone", "temporal_cls_token")]
    for p in moved:
        before = start[p] if p in start else np.zeros_like(after[p])
        assert np.abs(after[p] - np.asarray(before)).max() > 0, p
    # Adam's moments exist for the trainable parameters only.
    opt_elements = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim > 0)
    trainable = sum(after[p].size for p, t in mask.items() if t)
    assert opt_elements == 2 * trainable
    # Evaluation wrote the scores (mean of the per-view softmax) and the confusion matrix.
    scores = np.load(os.path.join(workdir, "scores_validation.npz"))
    np.testing.assert_allclose(scores["scores"], scores["view_probs"].mean(axis=1), rtol=1e-6)
    assert scores["view_probs"].shape == (8, 3, K) and len(scores["video_id"]) == 8
    protocol = json.loads(str(scores["protocol"]))
    assert protocol["clips"] == 1 and protocol["crops"] == 3
    assert list(scores["class_names"]) == protocol["label_map"]["names"]
    from PIL import Image
    with Image.open(os.path.join(workdir, "confusion_validation.png")) as image:
        assert image.format == "PNG" and image.size[0] > K * 20
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["protocol"]["label_map"]["sha256"] == protocol["label_map"]["sha256"]
    _export_round_trip(workdir, tmp_path)


def _export_round_trip(workdir, tmp_path):
    """`convert export --to pth` of the trained run: the state dict of torch_models.cma (parity
    with PyTorch: tests/test_convert_cma.py), which imports back to the same variables."""
    torch = pytest.importorskip("torch")
    from internvideo_jax.training.checkpointing import load_variables
    from internvideo_jax.convert import cma as conv
    from internvideo_jax.convert.__main__ import main
    main(["export", "--src", workdir, "--to", "pth", "--out", str(tmp_path / "cma.pth")])
    exported = torch.load(tmp_path / "cma.pth")["model"]
    assert "u_from_m.0.attn.in_proj_weight" in exported and "videomae.head.weight" in exported
    variables, _ = load_variables(workdir)
    back = conv.import_torch(exported, variables)
    for p, v in flatten(variables).items():
        np.testing.assert_array_equal(flatten(back)[p], v, err_msg="/".join(p))


def test_a_different_label_map_is_refused(data_dir, encoders):
    from internvideo_jax.infra import sharding
    config = _config(data_dir, encoders)
    task = get_task(config)
    stored = task.protocol()
    stored["label_map"] = dict(stored["label_map"], names=list(reversed(
        stored["label_map"]["names"])), sha256="0" * 64, source="file:old_labels.txt")
    mesh = sharding.make_mesh(config.mesh.to_dict())
    with pytest.raises(ValueError, match=r"differs from the checkpoint's .*0: 'shrinking' vs "
                                         r"'moving left'"):
        task.evaluate({"params": {}}, mesh, config, stored_protocol=stored)
