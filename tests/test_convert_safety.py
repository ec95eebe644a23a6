"""`python -m internvideo_jax.convert` never destroys a user's run: training workdirs are never
written into (not even with --overwrite), existing targets are replaced only with --overwrite,
and user mistakes (a non-checkpoint --src, a wrong-shaped tensor) are one line on stderr with
exit status 2. Fast: tiny random weights, fake workdirs, no training."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import internvideo_jax.convert.__main__ as cli  # noqa: E402
from internvideo_jax.training.checkpointing import load_params  # noqa: E402
from internvideo_jax.convert import videomae as cv  # noqa: E402
from internvideo_jax.convert.common import flatten  # noqa: E402
from internvideo_jax.convert.outputs import is_training_workdir  # noqa: E402
from tests.helpers import snapshot  # noqa: E402
from internvideo_jax.models import videomae  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPORT = ["--model", "videomae_pretrain", "--size", "tiny", "--frames", "4", "--image-size", "32"]
ACCEPTED = ("convert reads .pth/.pt/.pyth/.ckpt files written by torch.save, .safetensors files "
            "and HF transformers directories (config.json + *.safetensors or pytorch_model*.bin)")


@pytest.fixture(scope="module")
def official_sd():
    """A tiny VideoMAE pretraining state dict in the official layout (random weights)."""
    model = videomae.VideoMAEPretrain(videomae.SIZES["tiny"])
    target = cli.target_params(model, 4, 32)
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(v.shape).astype(np.float32)
              for k, v in flatten(target).items()}
    from internvideo_jax.convert.common import unflatten
    return cv.export_official(unflatten(params))


@pytest.fixture
def pth(official_sd, tmp_path):
    path = tmp_path / "vmae.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in official_sd.items()}}, path)
    return str(path)


def fake_workdir(path, *, checkpoints=True, metrics=True, config=True, tensorboard=True):
    """What train.py leaves in a workdir (the checkpoint's files are stand-ins)."""
    os.makedirs(path)
    if checkpoints:
        os.makedirs(os.path.join(path, "checkpoints", "2", "state"))
        with open(os.path.join(path, "checkpoints", "2", "state", "_METADATA"), "wb") as f:
            f.write(b"\x00orbax state\xff")
    if metrics:
        with open(os.path.join(path, "metrics.jsonl"), "w") as f:
            f.write('{"step": 1, "loss": 0.9}\n{"step": 2, "loss": 0.8}\n')
    if config:
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"config": {"model": "tiny"}, "derived": {"total_steps": 2}}, f)
    if tensorboard:
        os.makedirs(os.path.join(path, "tb"))
        with open(os.path.join(path, "tb", "events.out.tfevents.1"), "wb") as f:
            f.write(b"\x01\x02events")
    return str(path)


def refused(argv, capsys) -> str:
    """Run the command, expect exit status 2 and one line on stderr; return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert str(e.value) == err.rstrip("\n")
    return err.rstrip("\n")


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_import_into_a_training_workdir_is_refused_and_leaves_it_byte_identical(
        pth, tmp_path, capsys, overwrite):
    run = fake_workdir(tmp_path / "run")
    before = snapshot(run)
    err = refused(["import", "--src", pth, *IMPORT, "--out", run, *overwrite], capsys)
    assert err == (f"error: --out {run} is the training workdir {run} (it holds checkpoints/, "
                   f"metrics.jsonl, config.json of a run): convert never writes into a training "
                   f"workdir, even with --overwrite; choose another --out")
    assert snapshot(run) == before
    assert sorted(os.listdir(tmp_path)) == ["run", "vmae.pth"]  # no staging left either


@pytest.mark.parametrize("marker", ["checkpoints", "metrics", "config"])
def test_any_one_mark_makes_a_training_workdir(pth, tmp_path, capsys, marker):
    run = fake_workdir(tmp_path / "run", tensorboard=False,
                       **{m: m == marker for m in ("checkpoints", "metrics", "config")})
    assert is_training_workdir(run)
    before = snapshot(run)
    holds = {"checkpoints": "checkpoints/", "metrics": "metrics.jsonl",
             "config": "config.json of a run"}[marker]
    err = refused(["import", "--src", pth, *IMPORT, "--out", run, "--overwrite"], capsys)
    assert f"is the training workdir {run} (it holds {holds}): convert never writes" in err
    assert snapshot(run) == before


def test_export_into_or_inside_a_workdir_is_refused(pth, tmp_path, capsys):
    cli.main(["import", "--src", pth, *IMPORT, "--out", str(tmp_path / "params")])
    run = fake_workdir(tmp_path / "run")
    before = snapshot(run)
    src = str(tmp_path / "params")
    err = refused(["export", "--src", src, "--to", "hf", "--out", run, "--overwrite"], capsys)
    assert err.startswith(f"error: --out {run} is the training workdir {run} (it holds ")
    inside = os.path.join(run, "export.pth")
    err = refused(["export", "--src", src, "--to", "pth", "--out", inside], capsys)
    assert err == (f"error: --out {inside} is inside the training workdir {run} (it holds "
                   f"checkpoints/, metrics.jsonl, config.json of a run): convert never writes "
                   f"into a training workdir, even with --overwrite; choose another --out")
    deep = os.path.join(run, "checkpoints", "2")
    err = refused(["import", "--src", pth, *IMPORT, "--out", deep, "--overwrite"], capsys)
    assert err.startswith(f"error: --out {deep} is inside the training workdir {run} ")
    # replacing a directory that holds a run would delete the run
    err = refused(["export", "--src", src, "--to", "pth", "--out", str(tmp_path), "--overwrite"],
                  capsys)
    assert err.startswith(f"error: --out {tmp_path} holds the training workdir {run} (it holds ")
    assert snapshot(run) == before


def test_a_projects_checkpoints_folder_is_not_a_workdir(pth, tmp_path, capsys):
    """checkpoints/ of downloaded .pth files (no orbax step directories) is no run: importing
    next to them works."""
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    os.replace(pth, project / "checkpoints" / "vmae.pth")
    assert not is_training_workdir(str(project))
    out = str(project / "checkpoints" / "vmae_jax")
    cli.main(["import", "--src", str(project / "checkpoints" / "vmae.pth"), *IMPORT,
              "--out", out])
    assert "imported" in capsys.readouterr().out and os.path.isdir(out)


def test_an_existing_target_is_replaced_only_with_overwrite(pth, official_sd, tmp_path, capsys):
    cli.main(["import", "--src", pth, *IMPORT, "--out", str(tmp_path / "params")])
    src = str(tmp_path / "params")
    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    (old / "a.bin").write_bytes(b"x" * 10)
    before = snapshot(str(old))
    for argv in (["import", "--src", pth, *IMPORT], ["export", "--src", src, "--to", "hf"]):
        err = refused(argv + ["--out", str(old)], capsys)
        assert err == (f"error: --out {old} already exists and is a directory with 2 entries "
                       f"(a.bin, notes.txt): pass --overwrite to replace it, or choose another "
                       f"--out")
        assert snapshot(str(old)) == before
    old_file = tmp_path / "old.pth"
    old_file.write_bytes(b"12345")
    err = refused(["export", "--src", src, "--to", "pth", "--out", str(old_file)], capsys)
    assert err == (f"error: --out {old_file} already exists and is a file of 5 bytes: pass "
                   f"--overwrite to replace it, or choose another --out")
    assert old_file.read_bytes() == b"12345"

    # --overwrite: replaced, nothing of the old target left, the new one complete
    cli.main(["export", "--src", src, "--to", "pth", "--out", str(old_file), "--overwrite"])
    assert torch.load(old_file)["model"].keys() == official_sd.keys()
    cli.main(["export", "--src", src, "--to", "hf", "--out", str(old), "--overwrite"])
    assert sorted(os.listdir(old)) == ["config.json", "model.safetensors"]
    cli.main(["import", "--src", pth, *IMPORT, "--out", str(old), "--overwrite"])
    assert "notes.txt" not in os.listdir(old) and "config.json" not in os.listdir(old)
    got, _ = load_params(str(old))
    ref, _ = load_params(src)
    for k, v in flatten(ref).items():
        np.testing.assert_array_equal(flatten(got)[k], v)
    # an empty directory is no target to protect
    (tmp_path / "empty").mkdir()
    cli.main(["export", "--src", src, "--to", "hf", "--out", str(tmp_path / "empty")])
    assert not [n for n in os.listdir(tmp_path) if "partial" in n]


def test_a_failed_conversion_leaves_the_old_target(pth, official_sd, tmp_path, capsys):
    cli.main(["import", "--src", pth, *IMPORT, "--out", str(tmp_path / "params")])
    before = snapshot(str(tmp_path / "params"))
    sd = dict(official_sd)
    sd["encoder.blocks.0.mlp.fc1.weight"] = np.zeros((256, 128), np.float32)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "bad.pth")
    with pytest.raises(SystemExit):
        cli.main(["import", "--src", str(tmp_path / "bad.pth"), *IMPORT,
                  "--out", str(tmp_path / "params"), "--overwrite"])
    assert snapshot(str(tmp_path / "params")) == before


def test_a_shape_mismatch_is_printed_in_the_checkpoints_layout(official_sd, tmp_path, capsys):
    """A Linear weight is (out, in) in the file: the expected shape is printed the same way,
    not as our transposed kernel (128, 512); a qkv weight the reshape cannot take is listed too,
    as (3D, D)."""
    sd = dict(official_sd)
    sd["encoder.blocks.1.mlp.fc1.weight"] = np.zeros((256, 128), np.float32)  # (the size is
    sd["encoder.blocks.1.attn.qkv.weight"] = np.zeros((384, 96), np.float32)  # read off block 0)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "bad.pth")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(["import", "--src", str(tmp_path / "bad.pth"), *IMPORT,
                  "--out", str(tmp_path / "p")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: VideoMAE (official layout): the checkpoint does not match")
    assert ("shape mismatches (2): encoder.blocks.1.attn.qkv.weight: checkpoint (384, 96), "
            "model expects (384, 128), encoder.blocks.1.mlp.fc1.weight: checkpoint (256, 128), "
            "model expects (512, 128)\n") in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "p")


def test_mp4_text_and_zip_files_are_not_checkpoints(tmp_path, capsys):
    cases = {
        "clip.mp4": (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(64),
                     "an MP4/MOV video"),
        "notes.pth": (b"these are not weights\n", "a text file"),
        "archive.pth": (None, "a zip archive that is not a torch.save one (no data.pkl in it)"),
        "empty.pt": (b"", "an empty file"),
    }
    for name, (content, looks) in cases.items():
        path = tmp_path / name
        if content is None:
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("readme.txt", "hello")
        else:
            path.write_bytes(content)
        err = refused(["import", "--src", str(path), *IMPORT, "--out", str(tmp_path / "p")],
                      capsys)
        assert err == (f"error: {path} is not a PyTorch checkpoint (it looks like "
                       f"{looks}); {ACCEPTED}")
        for model in ("uniformerv2_classifier", "internvideo_multimodal"):
            assert "is not a PyTorch checkpoint" in refused(
                ["import", "--src", str(path), "--model", model, "--size", "tiny",
                 "--out", str(tmp_path / "p")], capsys)
        assert "is not a PyTorch checkpoint" in refused(["inspect", str(path)], capsys)
    assert not os.path.exists(tmp_path / "p")


def test_other_user_mistakes_are_one_line(pth, tmp_path, capsys):
    missing = str(tmp_path / "nope.pth")
    assert refused(["import", "--src", missing, *IMPORT, "--out", str(tmp_path / "p")],
                   capsys) == f"error: --src {missing}: no such file or directory"
    assert refused(["export", "--src", missing, "--to", "pth", "--out", str(tmp_path / "x")],
                   capsys) == f"error: --src {missing}: no such file or directory"
    err = refused(["import", "--src", pth, "--model", "videomae_pretrain", "--size", "XL",
                   "--out", str(tmp_path / "p")], capsys)
    assert err.startswith("error: --size 'XL': known sizes [")
    err = refused(["import", "--src", pth, *IMPORT, "--mesh", "fsdp", "--out",
                   str(tmp_path / "p")], capsys)
    assert err.startswith("error: --mesh 'fsdp': expected comma-separated axis=size")
    (tmp_path / "dir").mkdir()
    err = refused(["import", "--src", str(tmp_path / "dir"), *IMPORT, "--out",
                   str(tmp_path / "p")], capsys)
    assert err == (f"error: {tmp_path / 'dir'}: a directory without config.json, so not "
                   f"an HF transformers directory; {ACCEPTED}")


def test_a_bug_keeps_its_traceback(pth, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "import_params", lambda a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["import", "--src", pth, *IMPORT, "--out", str(tmp_path / "p")])


def test_the_command_exits_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    r = subprocess.run([sys.executable, "-m", "internvideo_jax.convert", "inspect",
                        str(tmp_path / "notes.txt")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr == (f"error: {tmp_path / 'notes.txt'} is not a PyTorch checkpoint (it "
                        f"looks like a text file); {ACCEPTED}\n")
