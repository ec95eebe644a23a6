"""Imported UniFormerV2 checkpoints of the architectures no named size has train and evaluate
through the normal entry points (convert import -> train with model.size=init_from -> evaluation
-> export), checked against the PyTorch module with the official names:

- Something-Something style: global UniBlocks on every layer but the first (the SthV2 files' 8 of
  12 / 16 of 24, where our tiny size has 2 of 4), local UniBlocks with BatchNorm statistics,
  temporal downsampling; the statistics after init_from are the checkpoint's.
- the frozen-backbone variant: no balance, the query token alone; fine-tuning leaves the CLIP
  backbone as imported and trains the global UniBlocks and the head.
"""
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import internvideo_jax.convert.__main__ as cli  # noqa: E402
from internvideo_jax.training import train  # noqa: E402
from internvideo_jax.training.checkpointing import load_variables  # noqa: E402
from internvideo_jax.convert.common import flatten  # noqa: E402
from internvideo_jax.tasks import get_task  # noqa: E402
from internvideo_jax.torch_models.uniformerv2 import UniFormerV2  # noqa: E402
from tests.helpers import apply_overrides  # noqa: E402

TINY = dict(image_size=64, patch=8, width=64, layers=4, heads=4)  # the tiny size's backbone
SSV2_LIKE = dict(TINY, return_list=[1, 2, 3], local=True, temporal_kernel=3, temporal_stride=2,
                 num_classes=8)
FROZEN = dict(TINY, return_list=[2, 3], local=False, temporal_kernel=1, temporal_stride=1,
              num_classes=8, frozen=True)


def released_file(kwargs: dict, path) -> "UniFormerV2":
    """The PyTorch model with random weights and BatchNorm statistics, saved as the official
    training code saves it ({'model_state', 'optimizer_state', 'epoch', 'cfg' (a YAML str)})."""
    torch.manual_seed(0)
    ref = UniFormerV2(**kwargs)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if p.ndim > 1 else 0.2)
                    + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight",
                                             "ln_pre.weight", "proj.0.weight")) else 0))
        for name, b in ref.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
            elif name.endswith("num_batches_tracked"):
                b.fill_(1234)
    torch.save({"model_state": ref.state_dict(), "optimizer_state": {}, "epoch": 22,
                "cfg": "MODEL:\n  ARCH: uniformerv2\n"}, path)
    return ref.eval()


def finetune_config(data_dir, init_from: str):
    from experiments.finetune_uniformerv2 import get_config
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir)
    c.eval.update(batch_size=8, num_clips=1, num_crops=1)
    c.update(batch_size=8, total_steps=2, log_every=1, checkpoint_every=2, init_from=init_from)
    return apply_overrides(c, {"model.size": "init_from"})


def torch_logits(ref, video_uint8: np.ndarray, task) -> np.ndarray:
    """The PyTorch model on the task's normalised input (N, 3, T, H, W)."""
    x = (video_uint8.astype(np.float32) / 255.0 - task.mean) / task.std
    with torch.no_grad():
        return ref(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())).numpy()


def import_and_finetune(kwargs, data_dir, tmp_path, monkeypatch):
    ref = released_file(kwargs, tmp_path / "released.pyth")
    cli.main(["import", "--src", str(tmp_path / "released.pyth"), "--model",
              "uniformerv2_classifier", "--frames", "8", "--out", str(tmp_path / "imported")])
    started = {}
    real = train.initialised

    def spy(*args, **kwargs_):
        state, report = real(*args, **kwargs_)
        started.update(state=jax.device_get(state), report=report)
        return state, report

    monkeypatch.setattr(train, "initialised", spy)
    config = finetune_config(data_dir, str(tmp_path / "imported"))
    final = train.train(config, str(tmp_path / "run"), progress=False)
    return ref, config, started, final


def check_export(kwargs: dict, tmp_path, task, video) -> None:
    """`convert export --to pth` of the run: the PyTorch module of this architecture loads it
    strictly and gives the run's logits."""
    cli.main(["export", "--src", str(tmp_path / "run"), "--to", "pth", "--out",
              str(tmp_path / "back.pyth")])
    back = UniFormerV2(**kwargs)
    back.load_state_dict(torch.load(tmp_path / "back.pyth")["model_state"], strict=True)
    variables, _ = load_variables(str(tmp_path / "run"))
    np.testing.assert_allclose(np.asarray(task.logits_fn(variables, video)),
                               torch_logits(back.eval(), video, task), rtol=1e-4, atol=1e-4)


def evaluation_of(workdir) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return next(r for r in reversed(rows) if "eval_top1" in r)


def test_ssv2_style_checkpoint_finetunes_evaluates_and_exports(data_dir, tmp_path, monkeypatch):
    ref, config, started, final = import_and_finetune(SSV2_LIKE, data_dir, tmp_path, monkeypatch)
    described = json.load(open(tmp_path / "imported" / "model.json"))
    assert described["name"] is None and described["size"]["return_list"] == [1, 2, 3]
    assert (described["local"], described["temporal_kernel"]) == (True, 3)
    # the BatchNorm statistics a fine-tuning run starts from are the checkpoint's, exactly
    ours = {"/".join(p): v for p, v in flatten(started["state"].model_state["batch_stats"]).items()}
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    assert len(ours) == 2 * 2 * 4  # lmhra1/lmhra2 x mean/var x 4 layers
    for path, value in ours.items():
        i, block = path.split("/")[1].split("_")[1], path.split("/")[2]
        stat = "running_mean" if path.endswith("mean") else "running_var"
        np.testing.assert_array_equal(
            value, sd[f"backbone.transformer.resblocks.{i}.{block}.pos_embed.0.{stat}"])
    assert "batch_stats: 16 of 16 tensors from init_from" in started["report"]
    # ... so the imported model's logits are the PyTorch model's before any step
    task = get_task(config)
    video = np.random.default_rng(0).integers(0, 256, (2,) + task.video_shape).astype(np.uint8)
    np.testing.assert_allclose(
        np.asarray(task.logits_fn(started["state"].eval_variables(), video)),
        torch_logits(ref, video, task), rtol=1e-4, atol=1e-4)
    # trained two steps, evaluated by the run itself, and the run's config.json describes it
    assert int(final.step) == 2 and np.isfinite(evaluation_of(tmp_path / "run")["eval_top1"])
    meta = json.load(open(tmp_path / "run" / "config.json"))
    assert meta["architecture"]["size"]["return_list"] == [1, 2, 3]
    # --mode=evaluate of the imported checkpoint itself (a workdir without a run: init_from),
    # BatchNorm statistics included: the 8 validation videos, scored
    from internvideo_jax import offline
    result = offline.evaluate(config, str(tmp_path / "eval_imported"))
    assert result["checkpoint"] == str(tmp_path / "imported") and result["videos"] == 8
    assert 0.0 <= result["top1"] <= 1.0
    check_export(SSV2_LIKE, tmp_path, task, video)


def test_frozen_variant_imports_trains_its_unfrozen_parts_and_exports(data_dir, tmp_path,
                                                                      monkeypatch):
    ref, config, started, final = import_and_finetune(FROZEN, data_dir, tmp_path, monkeypatch)
    described = json.load(open(tmp_path / "imported" / "model.json"))
    assert described["frozen"] is True
    task = get_task(config)
    video = np.random.default_rng(1).integers(0, 256, (2,) + task.video_shape).astype(np.uint8)
    np.testing.assert_allclose(
        np.asarray(task.logits_fn(started["state"].eval_variables(), video)),
        torch_logits(ref, video, task), rtol=1e-4, atol=1e-4)
    before = flatten(started["state"].params)
    after = flatten(jax.device_get(final.params))
    assert "balance" not in started["state"].params["backbone"]
    frozen = [p for p in before if p[0] == "backbone" and p[1].startswith(
        ("conv1", "class_embedding", "positional_embedding", "ln_pre", "resblocks"))]
    trained = [p for p in before if p not in frozen]
    assert frozen and trained
    for p in frozen:
        np.testing.assert_array_equal(after[p], before[p], err_msg="/".join(p))
    moved = [p for p in trained if np.abs(after[p] - before[p]).max() > 0]
    assert {p[1].split("_")[0] for p in moved if p[0] == "backbone"} >= {"dec"}
    assert any(p[0] == "proj_head" for p in moved)
    assert np.isfinite(evaluation_of(tmp_path / "run")["eval_top1"])
    check_export(FROZEN, tmp_path, task, video)
