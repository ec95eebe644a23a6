"""Released files as their training scripts save them: VideoMAE's save_model ({'model', 'optimizer',
'epoch', 'scaler', 'args': argparse.Namespace, 'model_ema'}), torch.compile's `_orig_mod.` keys,
and files that pickle other objects (refused, named, unless --trust-checkpoint)."""
import argparse
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import internvideo_jax.convert.__main__ as cli  # noqa: E402
from internvideo_jax.training.checkpointing import load_params  # noqa: E402
from internvideo_jax.convert import videomae as cv  # noqa: E402
from internvideo_jax.convert.common import flatten, unflatten  # noqa: E402
from internvideo_jax.convert.reading import choose_weights, strip_wrappers  # noqa: E402
from internvideo_jax.models import videomae  # noqa: E402

IMPORT = ["--model", "videomae_classifier", "--frames", "4", "--image-size", "32"]


class TrainingLogger:
    """An object of the kind some training scripts leave in a checkpoint."""

    def __init__(self):
        self.history = [1, 2]


def official_classifier(seed: int) -> dict:
    """A tiny VideoMAE classifier state dict in the official layout (torch tensors)."""
    model = videomae.VideoMAEClassifier(videomae.SIZES["tiny"], 5)
    target = cli.target_params(model, 4, 32)
    rng = np.random.default_rng(seed)
    params = unflatten({k: rng.standard_normal(v.shape).astype(np.float32)
                        for k, v in flatten(target).items()})
    return {k: torch.from_numpy(v) for k, v in cv.export_official(params).items()}


def save_model_layout(model: dict, ema: dict) -> dict:
    """What VideoMAE's utils.save_model writes (without DeepSpeed)."""
    args = argparse.Namespace(model="vit_base_patch16_224", lr=np.float64(1e-3), nb_classes=5,
                              window_size=(8, 14, 14), output_dir=pathlib.PosixPath("/out"),
                              seed=np.int64(0), mean=np.array([0.485, 0.456, 0.406]))
    return {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
            "epoch": 29, "scaler": {"scale": 65536.0, "growth_factor": 2.0}, "args": args,
            "model_ema": ema}


def head_of(path) -> np.ndarray:
    params, _ = load_params(str(path))
    return params["head"]["kernel"]


def test_save_model_checkpoint_imports_and_says_what_it_took(tmp_path, capsys):
    model, ema = official_classifier(0), official_classifier(1)
    torch.save(save_model_layout(model, ema), tmp_path / "checkpoint-29.pth")
    cli.main(["import", "--src", str(tmp_path / "checkpoint-29.pth"), *IMPORT,
              "--out", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert f"weights: entry 'model' ({len(model)} tensors); the file also holds" in out
    assert "'model_ema' (a state dict of" in out and "--weights model_ema" in out
    assert "'args' (a Namespace)" in out and "'epoch' (a int)" in out
    np.testing.assert_array_equal(head_of(tmp_path / "a"), model["head.weight"].numpy().T)
    cli.main(["import", "--src", str(tmp_path / "checkpoint-29.pth"), *IMPORT,
              "--weights", "model_ema", "--out", str(tmp_path / "ema")])
    assert "weights: entry 'model_ema'" in capsys.readouterr().out
    np.testing.assert_array_equal(head_of(tmp_path / "ema"), ema["head.weight"].numpy().T)


def test_an_entry_that_is_not_there_or_not_weights_is_named(tmp_path):
    torch.save(save_model_layout(official_classifier(0), official_classifier(1)),
               tmp_path / "c.pth")
    with pytest.raises(SystemExit, match=r"--weights teacher: the file has no entry 'teacher'; "
                                         r"it holds 'model' \(a state dict of \d+ tensors\); "
                                         r"'optimizer' \(a dict\)"):
        cli.main(["import", "--src", str(tmp_path / "c.pth"), *IMPORT, "--weights", "teacher",
                  "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"--weights args: that entry is a Namespace, not a "
                                         r"state dict"):
        cli.main(["import", "--src", str(tmp_path / "c.pth"), *IMPORT, "--weights", "args",
                  "--out", str(tmp_path / "o")])


def test_an_unknown_pickled_class_is_refused_by_name_unless_trusted(tmp_path, capsys):
    model = official_classifier(0)
    torch.save({"model": model, "logger": TrainingLogger()}, tmp_path / "odd.pth")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(["import", "--src", str(tmp_path / "odd.pth"), *IMPORT,
                  "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'odd.pth'} pickles objects other than tensors and "
                          f"plain values: tests.test_convert_reading.TrainingLogger. Unpickling "
                          f"them can run code, so they are refused.")
    assert "--trust-checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    cli.main(["import", "--src", str(tmp_path / "odd.pth"), *IMPORT, "--trust-checkpoint",
              "--out", str(tmp_path / "trusted")])
    np.testing.assert_array_equal(head_of(tmp_path / "trusted"), model["head.weight"].numpy().T)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_compiled_and_distributed_prefixes_are_stripped(prefix, tmp_path):
    model = official_classifier(0)
    torch.save({"model": {prefix + k: v for k, v in model.items()}}, tmp_path / "c.pth")
    cli.main(["import", "--src", str(tmp_path / "c.pth"), *IMPORT, "--out", str(tmp_path / "o")])
    np.testing.assert_array_equal(head_of(tmp_path / "o"), model["head.weight"].numpy().T)


def test_choose_weights_and_strip_wrappers_by_hand():
    t = torch.zeros(2)
    assert choose_weights({"a": t, "b": t}) == ({"a": t, "b": t},
                                                "weights: the file's 2 top-level tensors")
    sd, report = choose_weights({"model_ema": {"x": t}, "epoch": 3})  # the only state dict
    assert sd == {"x": t} and report.startswith("weights: entry 'model_ema' (1 tensors)")
    sd, _ = choose_weights({"module": {"x": t}, "model": {"y": t}})  # 'model' comes first
    assert sd == {"y": t}
    assert strip_wrappers({"module._orig_mod.a": 1, "module._orig_mod.b": 2}) == {"a": 1, "b": 2}
    assert strip_wrappers({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}  # not every key


def test_a_size_no_name_has_reaches_the_tasks_through_model_json(tmp_path, data_dir):
    """A pretraining file with a decoder no named size has (1 layer where tiny has 2): imported
    without --size, described in model.json; fine-tuning with model.size=init_from builds
    exactly that encoder."""
    import dataclasses

    from experiments.finetune import get_config
    from internvideo_jax.tasks import get_task
    size = dataclasses.replace(videomae.SIZES["tiny"], decoder_depth=1)
    target = cli.target_params(videomae.VideoMAEPretrain(size), 4, 32)
    rng = np.random.default_rng(0)
    params = unflatten({k: rng.standard_normal(v.shape).astype(np.float32)
                        for k, v in flatten(target).items()})
    torch.save({"model": {k: torch.from_numpy(v) for k, v in cv.export_official(params).items()}},
               tmp_path / "pretrain.pth")
    cli.main(["import", "--src", str(tmp_path / "pretrain.pth"), "--model", "videomae_pretrain",
              "--frames", "4", "--image-size", "32", "--out", str(tmp_path / "p")])
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir)
    c.update(init_from=str(tmp_path / "p"))
    c.model.size = "init_from"
    assert get_task(c).size == size
    c.init_from = ""
    with pytest.raises(ValueError, match="model.size=init_from takes the architecture stored "
                                         "with config.init_from, which is not set"):
        get_task(c)
