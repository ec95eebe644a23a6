"""VideoMAE reconstruction pictures (internvideo_jax/visualize.py): the panels' pixels against an
independent NumPy computation, the PNG's layout, and the CLI on a 2-step run."""
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from input_pipelines import masking, synthetic_videos
from internvideo_jax import visualize
from internvideo_jax.evaluation.evaluate import eval_data_config
from internvideo_jax.tasks import get_task
from tests.helpers import tiny_config

T, S, PT, P = 16, 64, 2, 8  # the tiny preset: 16 frames of 64x64, tubelet 2, patch 8
IMAGENET_MEAN_255 = np.array([124, 116, 104], np.uint8)  # round(255 * (0.485, 0.456, 0.406))


def _task(data_dir, **overrides):
    return get_task(tiny_config(data_dir, **overrides))


@pytest.fixture(scope="module")
def task_and_variables(data_dir):
    task = _task(data_dir)
    variables = nn.meta.unbox(task.init_variables(jax.random.key(3), task.init_batch(1)))
    return task, variables


def _clip(seed=0):
    """A (T, S, S, 3) uint8 clip with structure (not noise): a gradient plus a moving square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    video = np.empty((T, S, S, 3), np.uint8)
    for t in range(T):
        video[t, ..., 0] = (4 * xx + 3 * t) % 256
        video[t, ..., 1] = (4 * yy) % 256
        video[t, ..., 2] = 90
        video[t, 10 + t:30 + t, 20:40] = rng.integers(0, 256, 3)
    return video


def _mask(task, seed=0):
    return masking.tube_mask(tuple(task.grid), task.mask_ratio, np.random.default_rng(seed))


def _tokens():
    """[(t0, y0, x0)] of every token's corner, in (t, h, w) order, t slowest."""
    return [(t, y, x) for t in range(0, T, PT) for y in range(0, S, P) for x in range(0, S, P)]


def _patch_of(video, corner):
    """(PT*P*P, 3): a token's pixels in (pt, ph, pw) order, written out with loops."""
    t0, y0, x0 = corner
    return np.array([video[t0 + a, y0 + b, x0 + c] for a in range(PT) for b in range(P)
                     for c in range(P)])


def _prediction(task, variables, video, mask):
    """The model's (M, PT*P*P*3) output, the input normalised here in NumPy."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((video / 255.0 - mean) / std).astype(np.float32)[None]
    return np.asarray(task.model.apply(variables, x, mask[None]))[0]


def test_panels_match_the_reference_rule(task_and_variables):
    task, variables = task_and_variables
    video, mask = _clip(), _mask(task)
    panels = visualize.reconstruction(task, variables, video, mask)
    assert set(panels) == {"original", "masked", "reconstruction"}
    for v in panels.values():
        assert v.dtype == np.uint8 and v.shape == (T, S, S, 3)
    np.testing.assert_array_equal(panels["original"], video)

    pred = _prediction(task, variables, video, mask)  # (M, P*3)
    masked_order = np.flatnonzero(mask)
    assert pred.shape == (len(masked_order), PT * P * P * 3)
    for i, corner in enumerate(_tokens()):
        t0, y0, x0 = corner
        region = (slice(t0, t0 + PT), slice(y0, y0 + P), slice(x0, x0 + P))
        got_masked = panels["masked"][region].reshape(-1, 3)
        got_rec = _patch_of(panels["reconstruction"], corner).astype(np.float64)
        if not mask[i]:
            np.testing.assert_array_equal(panels["masked"][region], video[region])
            np.testing.assert_array_equal(panels["reconstruction"][region], video[region])
            continue
        assert (got_masked == IMAGENET_MEAN_255).all()
        x = _patch_of(video, corner) / 255.0  # (PT*P*P, 3)
        mu = x.mean(axis=0)
        sd = np.sqrt(((x - mu) ** 2).sum(axis=0) / (len(x) - 1))  # unbiased
        k = int(np.searchsorted(masked_order, i))
        expected = pred[k].reshape(-1, 3) * (sd + 1e-6) + mu
        expected255 = np.clip(expected, 0, 1) * 255
        # the module's forward is jitted, this one is not: allow float noise across a rounding
        assert np.abs(got_rec - expected255).max() <= 0.5 + 1e-2, (i, corner)


def test_the_masked_tubes_are_the_same_on_every_time_slice(task_and_variables):
    task, variables = task_and_variables
    panels = visualize.reconstruction(task, variables, _clip(1), _mask(task, 1))
    hidden = (panels["masked"] == IMAGENET_MEAN_255).all(-1)  # (T, S, S)
    for t in range(0, T, PT):
        np.testing.assert_array_equal(hidden[t], hidden[0])
    frac = hidden[0].mean()
    assert frac == pytest.approx(masking.num_masked((1, 8, 8), 0.9) / 64, abs=0.02)


def test_without_norm_pix_loss_the_prediction_is_taken_as_pixels(data_dir):
    task = _task(data_dir, **{"model.norm_pix_loss": False})
    variables = nn.meta.unbox(task.init_variables(jax.random.key(0), task.init_batch(1)))
    video, mask = _clip(), _mask(task)
    panels = visualize.reconstruction(task, variables, video, mask)
    pred = _prediction(task, variables, video, mask)
    i = int(np.flatnonzero(mask)[0])
    corner = _tokens()[i]
    expected255 = np.clip(pred[0].reshape(-1, 3), 0, 1) * 255
    got = _patch_of(panels["reconstruction"], corner).astype(np.float64)
    assert np.abs(got - expected255).max() <= 0.5 + 1e-2


def test_wrong_inputs_are_refused_precisely(task_and_variables):
    task, variables = task_and_variables
    mask = _mask(task)
    with pytest.raises(ValueError, match=r"uint8 of shape \(16, 64, 64, 3\)"):
        visualize.reconstruction(task, variables, _clip().astype(np.float32), mask)
    with pytest.raises(ValueError, match=r"bool of shape \(512,\)"):
        visualize.reconstruction(task, variables, _clip(), mask[:10])
    few = np.zeros_like(mask)
    few[:5] = True
    with pytest.raises(ValueError, match="hides 5 tokens.*exactly 456"):
        visualize.reconstruction(task, variables, _clip(), few)


def _fake_panels():
    rng = np.random.default_rng(7)
    return {k: rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
            for k in ("original", "masked", "reconstruction")}


@pytest.mark.parametrize("frames", [None, [0, 2, 4, 6, 8, 10, 12, 14], [5]])
def test_png_layout_and_pixels(tmp_path, frames):
    panels = _fake_panels()
    path = str(tmp_path / "sub" / "grid.png")
    size = visualize.write_grid(panels, path, frames)
    columns = list(range(T)) if frames is None else frames
    g, m = visualize.GAP, visualize.MARGIN
    width = 2 * m + visualize.LABEL_WIDTH + len(columns) * S + (len(columns) - 1) * g
    height = 2 * m + visualize.HEADER + 3 * S + 2 * g
    image = np.asarray(Image.open(path).convert("RGB"))
    assert size == (width, height) and image.shape == (height, width, 3)
    for r, key in enumerate(("original", "masked", "reconstruction")):
        for c, f in enumerate(columns):
            x = m + visualize.LABEL_WIDTH + c * (S + g)
            y = m + visualize.HEADER + r * (S + g)
            np.testing.assert_array_equal(image[y:y + S, x:x + S], panels[key][f])
    # the gap right of the first cell is background; the labels put ink left of the grid
    x0 = m + visualize.LABEL_WIDTH
    if len(columns) > 1:
        assert (image[m + visualize.HEADER:, x0 + S:x0 + S + g] == 255).all()
    assert (image[:, :x0] < 128).any()
    # deterministic: the same panels give the same bytes
    again = str(tmp_path / "again.png")
    visualize.write_grid(panels, again, frames)
    assert open(path, "rb").read() == open(again, "rb").read()


def test_write_grid_refuses_bad_panels_and_frames(tmp_path):
    panels = _fake_panels()
    with pytest.raises(ValueError, match="lacks \\['masked'\\]"):
        visualize.write_grid({k: v for k, v in panels.items() if k != "masked"},
                             str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match=r"indices in \[0, 16\)"):
        visualize.write_grid(panels, str(tmp_path / "x.png"), [3, 16])


def test_cli_end_to_end_on_a_two_step_run(data_dir, tmp_path, capsys):
    from internvideo_jax.training import train
    workdir = str(tmp_path / "run")
    train.train(tiny_config(data_dir, total_steps=2, checkpoint_every=2), workdir,
                progress=False)
    frames = synthetic_videos.render(
        synthetic_videos.sample_scene(np.random.default_rng(0), 80, 40), 80, 40,
        np.random.default_rng(1))  # (40, 80, 80, 3)
    video_path = str(tmp_path / "my clip.mp4")
    with open(video_path, "wb") as f:
        f.write(synthetic_videos.encode_mp4(frames))
    capsys.readouterr()
    visualize.main(["reconstruct", "--workdir", workdir, "--video", video_path, "--seed", "4"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == os.path.join(workdir, "reconstruction_my clip.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    columns = T // PT  # every tubelet's first frame
    assert image.shape[1::-1] == visualize.grid_size(3, columns, S)
    clip = visualize.first_clip(video_path, T, 2, S)  # the run's frames (16, stride 2), crop 64
    for c in range(columns):
        x, y = visualize.cell_origin(0, c, S)
        np.testing.assert_array_equal(image[y:y + S, x:x + S], clip[PT * c])
    # the masked row: the tube mask of --seed 4 at the run's ratio 0.9, in the mean colour
    task = get_task(tiny_config(data_dir))
    mask = _mask(task, 4).reshape(T // PT, S // P, S // P)[0]
    x, y = visualize.cell_origin(1, 0, S)
    cell = image[y:y + S, x:x + S]
    for h in range(S // P):
        for w in range(S // P):
            block = cell[h * P:(h + 1) * P, w * P:(w + 1) * P]
            if mask[h, w]:
                assert (block == IMAGENET_MEAN_255).all()
            else:
                np.testing.assert_array_equal(block, clip[0, h * P:(h + 1) * P,
                                                          w * P:(w + 1) * P])
    # --out and the experiment file as the config's base give the same picture
    other = str(tmp_path / "pics" / "b.png")
    visualize.main(["reconstruct", "--workdir", workdir, "--video", video_path, "--seed", "4",
                    "--config", "experiments/videomae_pretrain.py:tiny", "--out", other])
    assert capsys.readouterr().out.strip().splitlines()[-1] == other
    np.testing.assert_array_equal(np.asarray(Image.open(other).convert("RGB")), image)


def test_cli_refuses_a_workdir_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing.*--config"):
        visualize.load_config(str(tmp_path))


def _tensorboard_images(workdir: str) -> dict:
    """{(tag, step): (H, W, 3) uint8} of every image summary in workdir/tensorboard, read from
    the event files' records (length, crc, Event proto, crc) without TensorBoard."""
    import glob
    import io
    import struct
    from tensorboardX.proto import event_pb2
    found = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))):
        data = open(path, "rb").read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    png = value.image.encoded_image_string
                    found[(value.tag, event.step)] = np.asarray(
                        Image.open(io.BytesIO(png)).convert("RGB"))
    return found


def test_pretraining_draws_reconstructions_every_n_steps_and_in_tensorboard(data_dir, tmp_path):
    from input_pipelines import builders
    from internvideo_jax import offline
    from internvideo_jax.infra import sharding
    from internvideo_jax.training import train
    workdir = str(tmp_path / "run")
    config = tiny_config(data_dir, total_steps=3, checkpoint_every=3, **{
        "pictures.every_steps": 2, "pictures.videos": 2})
    train.train(config, workdir, progress=False)
    task = get_task(config)
    ids, videos, masks = visualize.fixed_clips(task, config)
    assert len(ids) == 2 and videos.shape == (2, T, S, S, 3)
    # the first two validation videos, one centre view each
    source = builders.open_data_source(eval_data_config(config, "validation"))
    assert ids == [source[i]["video_id"].decode() for i in range(2)]
    np.testing.assert_array_equal(masks[1], masking.tube_mask(
        tuple(task.grid), 0.9, np.random.default_rng([0, 1])))
    # step 2 (every 2) and step 3 (the end), each video: named by video and step
    for step in (2, 3):
        for vid in ids:
            assert os.path.exists(visualize.picture_path(workdir, vid, step))
    names = sorted(os.listdir(os.path.join(workdir, "pictures")))
    assert len(names) == 4, names
    # the last picture is the final weights' reconstruction, drawn from scratch here
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1},
                              devices=jax.local_devices()[:1])
    variables, _ = offline.restore_variables(task, workdir, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        panels = visualize.reconstruction(task, variables, videos[0], masks[0])
    again = str(tmp_path / "again.png")
    visualize.write_grid(panels, again, frames=range(0, T, PT))
    final = visualize.picture_path(workdir, ids[0], 3)
    drawn = np.asarray(Image.open(final).convert("RGB"))
    np.testing.assert_array_equal(drawn, np.asarray(Image.open(again).convert("RGB")))
    # the masked panel: the mean colour exactly where the fixed mask hides a tube
    x, y = visualize.cell_origin(1, 0, S)
    hidden = masks[0].reshape(T // PT, S // P, S // P)[0]
    cell = drawn[y:y + S, x:x + S].reshape(S // P, P, S // P, P, 3)
    assert (cell[hidden.nonzero()[0], :, hidden.nonzero()[1]] == IMAGENET_MEAN_255).all()
    # TensorBoard: the same pixels under reconstruction/<video> at both steps
    images = _tensorboard_images(workdir)
    assert sorted(images) == sorted((f"reconstruction/{v}", s) for v in ids for s in (2, 3))
    np.testing.assert_array_equal(images[(f"reconstruction/{ids[0]}", 3)], drawn)


def test_pictures_refused_for_a_task_that_draws_none(data_dir, tmp_path):
    from experiments.finetune import get_config
    from internvideo_jax.training import train
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir)
    c.pictures.every_steps = 5
    with pytest.raises(ValueError, match="draws no pictures while training.*every_steps=0"):
        train.train(c, str(tmp_path / "x"), progress=False)
    assert not os.path.exists(tmp_path / "x")


def test_evaluation_pictures_go_to_tensorboard(tmp_path):
    """written_since names the PNGs a call wrote or rewrote; the writer puts them in TensorBoard
    with their pixels."""
    from internvideo_jax.evaluation import pictures
    from internvideo_jax.training.metrics_writer import MetricsWriter
    workdir = str(tmp_path)
    old = np.full((4, 6, 3), 7, np.uint8)
    Image.fromarray(old).save(tmp_path / "kept.png")
    Image.fromarray(old).save(tmp_path / "rewritten.png")
    before = pictures.png_times(workdir)
    os.makedirs(tmp_path / "pictures")
    new = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    Image.fromarray(new).save(tmp_path / "pictures" / "timeline_a.png")
    st = os.stat(tmp_path / "rewritten.png")
    Image.fromarray(new).save(tmp_path / "rewritten.png")
    os.utime(tmp_path / "rewritten.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    since = pictures.written_since(workdir, before)
    assert sorted(since) == ["pictures/timeline_a", "rewritten"]
    writer = MetricsWriter(workdir, 10, 0, progress=False)
    writer.images(since, 10)
    writer.close()
    images = _tensorboard_images(workdir)
    assert sorted(images) == [("pictures/timeline_a", 10), ("rewritten", 10)]
    np.testing.assert_array_equal(images[("pictures/timeline_a", 10)], new)
