"""Sliding-window clip features over untrimmed videos (internvideo_jax/localization/features.py):
windows and times by hand, clips equal to the decoded frames, the same features on 1 and 4
devices and on a rerun, resume and bad videos through --mode=extract_clip_features."""
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from input_pipelines import decode, synthetic_videos
from internvideo_jax.infra import sharding
from internvideo_jax.localization import features
from tests.helpers import apply_overrides

FPS = 25
WINDOWS = features.ClipWindows(clip_frames=4, frame_step=2, clip_stride=3, size=32)


def _video(i: int, frames: int) -> bytes:
    rng = np.random.default_rng([31, i])
    spec = synthetic_videos.sample_scene(rng, 48, frames)
    return synthetic_videos.encode_mp4(synthetic_videos.render(spec, 48, frames, rng), fps=FPS,
                                       keyframe_interval=8)


def test_windows_by_hand():
    # span = (4 - 1) * 2 + 1 = 7 frames; starts 0, 3, ... while start + 7 <= 20
    assert WINDOWS.span == 7
    np.testing.assert_array_equal(WINDOWS.starts(20), [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(WINDOWS.indices(12, 20), [12, 14, 16, 18])
    # a clip's time: halfway from its first frame's start to its last frame's end
    # = (start + span / 2) / fps at a constant rate
    times = WINDOWS.times(np.arange(20) / FPS, FPS)
    np.testing.assert_allclose(times, (np.array([0, 3, 6, 9, 12]) + 3.5) / FPS, rtol=1e-6)
    # shorter than a span: one clip, the last frame repeated
    np.testing.assert_array_equal(WINDOWS.starts(5), [0])
    np.testing.assert_array_equal(WINDOWS.indices(0, 5), [0, 2, 4, 4])
    # the reference: 16 consecutive frames every 4 -> feature i at (4 i + 8) / fps
    ref = features.ClipWindows(16, 1, 4, 224)
    np.testing.assert_array_equal(ref.starts(100), np.arange(0, 85, 4))
    np.testing.assert_allclose(ref.times(np.arange(100) / 30, 30),
                               (4 * np.arange(22) + 8) / 30, rtol=1e-6)


def test_clips_are_the_decoded_frames_at_the_window_indices():
    data = _video(0, 30)
    with decode.Video(data) as video:
        clips = list(features.video_clips(video, WINDOWS))
        starts = WINDOWS.starts(video.num_frames)
        assert len(clips) == len(starts) == 8
        for start, clip in zip(starts, clips):
            frames = video.frames(WINDOWS.indices(int(start), video.num_frames))
            expected = np.stack([decode.to_rgb(f, 32, 32) for f in frames])
            np.testing.assert_array_equal(clip, expected)


def _config(dataset: str, data_dir: str, init_from: str = ""):
    from experiments.finetune import get_config
    return apply_overrides(get_config("tiny"), {
        "data.dataset": dataset, "data.data_dir": data_dir, "data.num_frames": 4,
        "data.crop_size": 32, "init_from": init_from, "features.clip_frames": 4,
        "features.frame_step": 2, "features.clip_stride": 3, "features.size": 32,
        "features.batch_size": 8})


def _random_classifier(tmp_path, config) -> str:
    from internvideo_jax.convert.cli_common import save_params
    from internvideo_jax.tasks import get_task
    task = get_task(config)
    variables = task.init_variables(jax.random.key(0), task.init_batch(1))
    path = str(tmp_path / "classifier")
    save_params(jax.tree.map(np.asarray, nn.meta.unbox(variables["params"])), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three good videos of different lengths and two bad ones, listed in a file list."""
    root = tmp_path_factory.mktemp("untrimmed")
    lengths = {"a": 30, "b": 47, "c": 9}
    for name, n in lengths.items():
        (root / f"{name}.mp4").write_bytes(_video(ord(name), n))
    good = _video(1, 40)
    (root / "truncated.mp4").write_bytes(good[: len(good) * 4 // 10])
    (root / "text.mp4").write_bytes(b"not a video\n")
    (root / "list.txt").write_text("a.mp4 0\ntruncated.mp4 0\nb.mp4 0\ntext.mp4 0\nc.mp4 0\n")
    return str(root), lengths


def _extract(folder_path, tmp_path, config, devices):
    from internvideo_jax.tasks import get_task
    from internvideo_jax.offline import restore_variables
    from input_pipelines import builders
    task = get_task(config)
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices=devices)
    variables, _ = restore_variables(task, config.init_from, mesh)
    source = builders.open_data_source(config.data)
    got, bad = {}, []
    extractor = features.Extractor(task, variables, mesh, WINDOWS, batch_size=4)
    items = ((source[i], str(tmp_path / f"{i}.npz")) for i in (0, 2, 4))
    extractor.run(items, lambda p: got.update({p.video_id: (p.times, p.outputs)}),
                  lambda e, why: bad.append(why))
    return got, bad


def test_same_features_on_1_and_4_devices_and_on_a_rerun(folder, tmp_path):
    root, lengths = folder
    config = _config(f"list:{root}/list.txt", str(tmp_path))
    config.init_from = _random_classifier(tmp_path, config)
    one, bad = _extract(root, tmp_path, config, jax.devices()[:1])
    four, _ = _extract(root, tmp_path, config, jax.devices()[:4])
    again, _ = _extract(root, tmp_path, config, jax.devices()[:1])
    assert not bad and sorted(one) == ["a", "b", "c"]
    for vid, n in lengths.items():
        times, out = one[vid]
        starts = WINDOWS.starts(n)
        assert out["features"].shape == (len(starts), 128) and out["scores"].shape[1] == 8
        np.testing.assert_allclose(times, (starts + WINDOWS.span / 2) / FPS, rtol=1e-6)
        np.testing.assert_allclose(out["scores"].sum(1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(four[vid][1]["features"], out["features"], atol=1e-5)
        np.testing.assert_array_equal(again[vid][1]["features"], out["features"])
    assert np.abs(one["a"][1]["features"][0] - one["a"][1]["features"][-1]).max() > 1e-3


def test_extract_mode_skips_bad_videos_resumes_and_refuses_other_windows(folder, tmp_path):
    from internvideo_jax import offline
    root, lengths = folder
    config = _config(f"list:{root}/list.txt", str(tmp_path))
    config.init_from = _random_classifier(tmp_path, config)
    config.features.npy = True
    work = str(tmp_path / "work")
    out = offline.extract_clip_features(config, work)
    where, splits = features.open_dataset(out)
    assert sorted(where) == ["a", "b", "c"]
    bad = open(os.path.join(work, features.BAD_FILE)).read().splitlines()
    assert sorted(line.split("\t")[1] for line in bad) == ["text", "truncated"]
    split, i = where["b"]
    record = splits[split][i]
    assert record["features"].shape == (len(WINDOWS.starts(lengths["b"])), 128)
    np.testing.assert_allclose(record["times"], (WINDOWS.starts(47) + 3.5) / FPS, rtol=1e-6)
    npy = [f for f in os.listdir(os.path.join(work, "npy", "train")) if f.startswith("b-")]
    np.testing.assert_array_equal(np.load(os.path.join(work, "npy", "train", npy[0])),
                                  record["features"])
    # resume: only the missing video is extracted again, to the same values
    parts = os.path.join(work, "parts", "train")
    kept = {f: os.stat(os.path.join(parts, f)).st_mtime_ns for f in os.listdir(parts)}
    os.remove(os.path.join(parts, "00000002.npz"))  # b
    offline.extract_clip_features(config, work)
    for f, mtime in kept.items():
        if f != "00000002.npz":
            assert os.stat(os.path.join(parts, f)).st_mtime_ns == mtime
    where, splits = features.open_dataset(out)
    np.testing.assert_array_equal(splits[where["b"][0]][where["b"][1]]["features"],
                                  record["features"])
    config.features.clip_stride = 5
    with pytest.raises(ValueError, match="other settings.*clip_stride"):
        offline.extract_clip_features(config, work)


def test_one_pass_decode_equals_seeking_on_files_made_as_users_make_them():
    """Stream-copy cuts (edit lists), WebM/MKV with longer audio, VFR, rotation, HEVC/AV1 where
    this PyAV encodes them: the extractor's single forward decode (iter_frames) gives every shown
    frame, the same as seeking to each (Video.frames), so the clips are the same."""
    from tests.video_fixtures import readable_files
    for name, data in readable_files().items():
        with decode.Video(data) as video:
            streamed = [(i, decode.to_rgb(f, 32, 32)) for i, f in video.iter_frames()]
            assert [i for i, _ in streamed] == list(range(video.num_frames)), name
            sought = video.frames(np.arange(video.num_frames))
            for (_, a), f in zip(streamed, sought):
                np.testing.assert_array_equal(a, decode.to_rgb(f, 32, 32), err_msg=name)
            clips = list(features.video_clips(video, WINDOWS))
            assert len(clips) == len(WINDOWS.starts(video.num_frames)), name
