"""The converter's command line, end to end: a trained workdir out to HF / .pth and back in."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from internvideo_jax.training import train  # noqa: E402
from internvideo_jax.training.checkpointing import load_params as latest_params  # noqa: E402
from internvideo_jax.convert.__main__ import main  # noqa: E402
from internvideo_jax.convert.common import flatten  # noqa: E402
from internvideo_jax.models import videomae  # noqa: E402
from tests.helpers import snapshot, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def workdir(data_dir, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("run"))
    train.train(tiny_config(data_dir, total_steps=2, checkpoint_every=2), path, progress=False)
    return path


def test_export_hf_loads_in_transformers_and_matches(workdir, tmp_path):
    main(["export", "--src", workdir, "--to", "hf", "--out", str(tmp_path / "hf")])
    hf = transformers.VideoMAEForPreTraining.from_pretrained(str(tmp_path / "hf")).eval()
    params, _ = latest_params(workdir)
    rng = np.random.default_rng(0)
    video = rng.normal(size=(1, 16, 64, 64, 3)).astype(np.float32)
    mask = np.zeros((1, 512), bool)
    mask[0, rng.permutation(512)[:456]] = True
    with torch.no_grad():
        logits = hf(torch.from_numpy(video.transpose(0, 1, 4, 2, 3)),
                    bool_masked_pos=torch.from_numpy(mask)).logits.numpy()
    with jax.default_matmul_precision("highest"):
        ours = videomae.VideoMAEPretrain(videomae.SIZES["tiny"], 0.9).apply(
            {"params": params}, video, mask)
    assert np.abs(np.asarray(ours) - logits).max() / np.abs(logits).max() < 1e-5


def test_export_pth_then_import_gives_the_same_params(workdir, tmp_path, capsys):
    main(["export", "--src", workdir, "--to", "pth", "--out", str(tmp_path / "x.pth")])
    main(["import", "--src", str(tmp_path / "x.pth"), "--model", "videomae_pretrain", "--size",
          "tiny", "--frames", "16", "--image-size", "64", "--out", str(tmp_path / "params")])
    a, _ = latest_params(workdir)
    b, _ = latest_params(str(tmp_path / "params"))
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k])
    main(["inspect", str(tmp_path / "x.pth")])
    out = capsys.readouterr().out
    assert "encoder.blocks.3.attn.q_bias" in out and "975,296 parameters" in out


def test_import_sharded_over_a_mesh(workdir, tmp_path, monkeypatch, capsys):
    """--mesh fsdp=8: every array is placed by the rules table before it is saved (a big qkv
    kernel split 8 ways on its 'embed' rows), and the checkpoint holds the same values."""
    import internvideo_jax.convert.__main__ as cli
    main(["export", "--src", workdir, "--to", "pth", "--out", str(tmp_path / "x.pth")])
    saved = {}
    real_save = cli.save_params
    monkeypatch.setattr(cli, "save_params", lambda p, out: (saved.update(p), real_save(p, out)))
    main(["import", "--src", str(tmp_path / "x.pth"), "--model", "videomae_pretrain", "--size",
          "tiny", "--frames", "16", "--image-size", "64", "--mesh", "fsdp=8", "--out",
          str(tmp_path / "params")])
    qkv = saved["encoder"]["transformer"]["blocks_0"]["attn"]["qkv"]["kernel"]  # (128, 3, 4, 32)
    assert qkv.sharding.spec[0] == "fsdp" and len(qkv.sharding.device_set) == 8
    assert {s.data.shape for s in qkv.addressable_shards} == {(16, 3, 4, 32)}
    assert "params over mesh fsdp=8" in capsys.readouterr().out
    a, _ = latest_params(workdir)
    b, _ = latest_params(str(tmp_path / "params"))
    for k, v in flatten(a).items():
        np.testing.assert_array_equal(flatten(b)[k], v)


def test_import_with_the_wrong_size_names_the_right_one(workdir, tmp_path):
    main(["export", "--src", workdir, "--to", "pth", "--out", str(tmp_path / "x.pth")])
    with pytest.raises(SystemExit, match=r"--size B is not the VideoMAE this checkpoint holds: "
                                         r"dim 128 in the checkpoint, 768 in --size B, depth 4 "
                                         r"in the checkpoint, 12 in --size B, .*use --size tiny"):
        main(["import", "--src", str(tmp_path / "x.pth"), "--model", "videomae_pretrain",
              "--size", "B", "--out", str(tmp_path / "p")])


def test_import_hf_directory(tmp_path):
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4,
                                      hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=128, layer_norm_eps=1e-6, num_labels=3)
    hf = transformers.VideoMAEForVideoClassification(cfg)
    hf.save_pretrained(str(tmp_path / "hf"))
    main(["import", "--src", str(tmp_path / "hf"), "--model", "videomae_classifier",
          "--frames", "4", "--image-size", "32", "--out", str(tmp_path / "params")])
    params, _ = latest_params(str(tmp_path / "params"))
    np.testing.assert_array_equal(params["head"]["kernel"],
                                  hf.classifier.weight.detach().numpy().T)
    q = hf.videomae.encoder.layer[0].attention.attention.query.bias.detach().numpy()
    np.testing.assert_array_equal(
        params["encoder"]["transformer"]["blocks_0"]["attn"]["q_bias"].ravel(), q)


def test_a_trained_workdir_is_never_written_into(workdir, tmp_path, capsys):
    """import --out and export --to hf --out the run itself: refused (also with --overwrite), one
    line, status 2, and the checkpoints, metrics and config.json byte-identical afterwards."""
    main(["export", "--src", workdir, "--to", "pth", "--out", str(tmp_path / "x.pth")])
    before = snapshot(workdir)
    assert {"config.json", "metrics.jsonl"} <= set(before) and any(
        k.startswith("checkpoints/") for k in before)
    message = (f"error: --out {workdir} is the training workdir {workdir} (it holds "
               f"checkpoints/, metrics.jsonl, config.json of a run): convert never writes into a "
               f"training workdir, even with --overwrite; choose another --out")
    for argv in (["import", "--src", str(tmp_path / "x.pth"), "--model", "videomae_pretrain",
                  "--size", "tiny", "--frames", "16", "--image-size", "64"],
                 ["export", "--src", workdir, "--to", "hf"]):
        for overwrite in ([], ["--overwrite"]):
            capsys.readouterr()
            with pytest.raises(SystemExit) as e:
                main(argv + ["--out", workdir] + overwrite)
            assert e.value.code == 2
            assert capsys.readouterr().err == message + "\n"
    assert snapshot(workdir) == before
