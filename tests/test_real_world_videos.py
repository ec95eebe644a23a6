"""Files as users have them (tests/video_fixtures.py): exact frames, true counts, named failures.

The reference for every readable file is PyAV's plain sequential decode (what a player shows);
for the stream-copy cut it was also checked against the ffmpeg command line's own output when
this test was written (identical frames, see input_pipelines/decode.py).
"""
import io
import os
import re

import av
import grain
import numpy as np
import pytest

from input_pipelines import build, builders, decode, robust, sampling, sources
from tests import video_fixtures


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("real world")  # a space in the folder name too
    readable, unreadable = video_fixtures.write_folder(str(root))
    return str(root), readable, unreadable


def _sequential(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [decode.to_rgb(f) for f in c.decode(video=0)]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_every_kind_this_pyav_can_write_is_there(folder):
    _, readable, unreadable = folder
    assert {"plain.mp4", "cut_editlist.mp4", "audio_longer.webm", "audio_longer.mkv", "vfr.mp4",
            "rotated.mp4", "clip, take 2.mp4", "my clip.mp4", "vidéo 東京.mp4"} <= set(readable)
    for codec, name in (("libx265", "hevc.mp4"), ("libsvtav1", "av1.mkv")):
        assert (name in readable) == video_fixtures.can_encode(codec)
    assert len(unreadable) == 7


def test_readable_files_give_the_frames_a_player_shows(folder):
    _, readable, _ = folder
    rng = np.random.default_rng(0)
    for name, path in readable.items():
        data = _read(path)
        shown = _sequential(data)
        with decode.Video(data) as video:
            assert video.num_frames == len(shown), name
            n = len(shown)
            picks = [0, n // 2, n - 1, *rng.integers(0, n, 5)]
            got = video.frames(picks)
        for i, frame in zip(picks, got):
            np.testing.assert_array_equal(decode.to_rgb(frame), shown[i], err_msg=f"{name} {i}")


def test_every_frame_alone_is_found_by_seeking(folder):
    """Each frame decoded on its own (a seek to it, as a training clip starts anywhere) is the
    frame shown there. HEVC's open GOPs put pictures before a keyframe in display order after
    it in decode order: seeking to their time lands on that keyframe, which cannot decode them."""
    _, readable, _ = folder
    for name, path in readable.items():
        data = _read(path)
        shown = _sequential(data)
        with decode.Video(data) as video:
            for i in range(len(shown)):
                np.testing.assert_array_equal(decode.to_rgb(video.frames([i])[0]), shown[i],
                                              err_msg=f"{name} frame {i}")


def test_the_traps_are_real(folder):
    """The fixtures hold what broke the old frame table: hidden pre-roll packets, and container
    durations that overcount the video (so the tests above are not vacuous)."""
    _, readable, _ = folder
    with av.open(readable["cut_editlist.mp4"]) as c:
        packets = [p for p in c.demux(video=0) if p.size]
        hidden = sum(p.is_discard for p in packets)
    assert hidden == 10 and len(packets) - hidden == 50  # 10 pre-roll frames before 2.3 s
    for name in ("audio_longer.webm", "audio_longer.mkv"):
        with av.open(readable[name]) as c:
            by_duration = c.duration / av.time_base * float(c.streams.video[0].average_rate)
        assert by_duration > 1.9 * video_fixtures.FRAMES  # audio is twice as long


def test_unreadable_files_are_named_with_the_reason(folder):
    root, _, unreadable = folder
    for name, pattern in unreadable.items():
        with pytest.raises(decode.DecodeError) as e:
            decode.check(_read(os.path.join(root, name)))
        assert re.search(pattern, str(e.value)), (name, str(e.value))


def test_validate_finds_every_broken_file_and_no_readable_one(folder, tmp_path):
    root, readable, unreadable = folder
    for deep in (False, True):
        report = tmp_path / f"report_{deep}.tsv"
        argv = ["validate", "--format", "list", "--annotations", os.path.join(root, "list.txt"),
                "--report", str(report), "--min-frames", "8"] + (["--deep"] if deep else [])
        assert build.main(argv) == 1
        rows = [line.split("\t") for line in report.read_text("utf-8").splitlines()[1:]]
        named = {os.path.basename(path): (status, why) for path, status, why in rows}
        assert set(named) == set(unreadable), deep
        for name, (status, why) in named.items():
            assert status == "unreadable" and re.search(unreadable[name], why), (name, why)


def test_training_skips_each_bad_file_and_counts_it_once(folder):
    root, readable, unreadable = folder
    source = sources.open_source(f"list:{root}/list.txt", "train")
    assert len(source) == len(readable) + len(unreadable)
    clip = builders.ClassifyClip(num_frames=8, stride=2, crop_size=32, randaugment=None,
                                 erasing=0.0)
    ds = (grain.MapDataset.range(len(source)).repeat(3).seed(0).random_map(
        robust.SkipBadVideos(source, clip)).batch(4, drop_remainder=True,
                                                     batch_fn=builders.stack_views))
    tracker = robust.BadVideoTracker(budget=len(unreadable))  # exactly enough: never raises
    for i in range(len(ds)):
        batch = tracker.update(dict(ds[i]))
        assert batch["video"].shape == (4, 8, 32, 32, 3)
    assert {os.path.basename(n) for n in tracker.ids} == set(unreadable)
    assert tracker.distinct == len(unreadable) and tracker.count >= 3 * len(unreadable)
    with pytest.raises(RuntimeError, match=rf"{len(unreadable)} videos failed to load, more "
                                           rf"than data.max_bad_videos={len(unreadable) - 1}"):
        strict = robust.BadVideoTracker(budget=len(unreadable) - 1)
        for i in range(len(ds)):
            strict.update(dict(ds[i]))


def test_evaluation_views_skip_and_report_bad_files(folder):
    root, readable, unreadable = folder
    data = _data_config(root)
    views = builders.EvalViews(num_frames=8, stride=2, crop_size=32, num_clips=2, num_crops=3)
    ds, n = builders.eval_dataset(data, views, batch_size=4)
    errors = {}
    count = 0
    for batch in ds:
        for valid, error, video in zip(batch["valid"], batch["error"], batch["video"]):
            if not valid:
                continue
            count += 1
            if str(error):
                path, why = str(error).split("\t", 1)
                errors[os.path.basename(path)] = why
                assert not video.any()  # a blank, never a wrong video
    assert count == n == len(readable) + len(unreadable)
    assert set(errors) == set(unreadable)
    for name, why in errors.items():
        assert re.search(unreadable[name], why), (name, why)


def _data_config(root: str):
    from ml_collections import config_dict
    return config_dict.ConfigDict(dict(
        dataset=f"list:{root}/list.txt", split="validation", data_dir="", video_root="",
        labels="", num_workers=0, num_threads=2, prefetch_batches=2))


def test_sampling_by_time_on_a_variable_frame_rate_file(folder):
    """Frames 1 / sample_fps s apart by presentation time, checked against the frames' own
    timestamps read by PyAV."""
    _, readable, _ = folder
    data = _read(readable["vfr.mp4"])
    with av.open(io.BytesIO(data)) as c:
        times = np.array([f.time for f in c.decode(video=0)])
    times -= times[0]
    with decode.Video(data) as video:
        np.testing.assert_allclose(video.times, times, atol=1e-9)
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx = sampling.dense_time_indices(times, 6, 5.0, rng)  # 0.2 s apart
        start = times[idx[0]]
        for k, i in enumerate(idx):  # frame i is the one on screen at start + k / 5
            t = start + k / 5.0
            assert times[i] <= t + 1e-6 and (i == len(times) - 1 or times[i + 1] > t + 1e-6)


def test_sampling_by_time_by_hand():
    times = np.array([0.0, 0.07, 0.1, 0.18, 0.22, 0.26, 0.36])
    # start 0 (the only frame from which 0.3 s fits), frames on screen at 0, .1, .2, .3
    np.testing.assert_array_equal(
        sampling.dense_time_indices(times, 4, 10.0, np.random.default_rng(0)), [0, 2, 3, 5])
    # Too short for 1 s: clamp repeats the last frame.
    np.testing.assert_array_equal(
        sampling.dense_time_indices(times, 3, 2.0, np.random.default_rng(0)), [0, 6, 6])
    # Test views: starts 0 and the latest that fits (0.36 - 0.2 = 0.16 -> the frame at 0.1).
    views = sampling.dense_time_test_views(times, 3, 10.0, 2)
    np.testing.assert_array_equal(views[0], [0, 2, 3])
    np.testing.assert_array_equal(views[1], [2, 3, 5])


def test_sampling_by_time_equals_the_frame_stride_on_constant_rate_video():
    times = np.arange(100) / 25.0
    for seed in range(20):
        by_time = sampling.dense_time_indices(times, 16, 25.0 / 4, np.random.default_rng(seed))
        by_stride = sampling.dense_indices(100, 16, 4, np.random.default_rng(seed))
        np.testing.assert_array_equal(by_time, by_stride)


def test_reencoding_keeps_the_timestamps_and_the_frames(folder):
    _, readable, _ = folder
    for name in ("vfr.mp4", "cut_editlist.mp4"):
        data = _read(readable[name])
        out = build.reencode_short_side(data, 32)
        with decode.Video(data) as a, decode.Video(out) as b:
            assert b.num_frames == a.num_frames, name
            np.testing.assert_allclose(b.times, a.times, atol=1e-3, err_msg=name)
        small = np.stack(_sequential(out)).astype(int)
        assert small.shape[1:3] == (32, 32)
        # Same frames in the same order: the fixtures' frame-number stripe (the top 8 rows,
        # consecutive frames 47+ grey levels apart) reads back as the original's within the
        # two compressions' error, frame by frame.
        stripe = np.array([f[:8].mean() for f in _sequential(data)])
        np.testing.assert_allclose(small[:, :4].mean(axis=(1, 2, 3)), stripe, atol=8,
                                   err_msg=name)


def test_tiny_training_and_evaluation_on_a_list_of_every_kind(folder, tmp_path):
    """Fine-tuning from scratch, its end-of-training evaluation on a second list, and
    `--mode=evaluate` complete on the mixed folder; the bad files are counted once in training
    and listed with their reasons in the result and in the scores file."""
    import json
    import shutil

    from experiments.finetune import get_config
    from internvideo_jax import offline
    from internvideo_jax.training import train
    from internvideo_jax.training.metrics_writer import read_metrics
    root, readable, unreadable = folder
    val = os.path.join(root, "val.txt")  # the same files as an evaluation list
    shutil.copy(os.path.join(root, "list.txt"), val)
    c = get_config("tiny")
    c.data.update(dataset=f"list:{root}/list.txt", eval_dataset=f"list:{val}", num_frames=8,
                  crop_size=32, max_bad_videos=len(unreadable))
    c.eval.update(batch_size=8, num_clips=1, num_crops=3)
    c.update(batch_size=8, total_steps=6, log_every=2, checkpoint_every=6)
    workdir = str(tmp_path / "ft")
    train.train(c, workdir, progress=False)
    records = read_metrics(workdir)
    trained = [r for r in records if "loss" in r]
    # 48 draws over 18 files (2.7 epochs): every bad file was met, each counted once
    assert trained[-1]["bad_videos"] == len(unreadable)
    assert all(r["bad_draws"] >= r["bad_videos"] for r in trained)
    result = json.load(open(os.path.join(workdir, "eval_validation.json")))
    assert result["videos"] == len(readable)
    assert result["skipped_videos"] == len(unreadable)
    reasons = {os.path.basename(s["video"]): s["reason"] for s in result["skipped"]}
    assert set(reasons) == set(unreadable)
    assert all(re.search(unreadable[n], why) for n, why in reasons.items())
    scores = np.load(os.path.join(workdir, "scores_validation.npz"))
    assert len(scores["video_id"]) == len(readable)
    assert {os.path.basename(v) for v in scores["skipped_video"]} == set(unreadable)
    again = offline.evaluate(c, workdir)  # --mode=evaluate
    assert again["top1"] == result["top1"] and again["skipped_videos"] == len(unreadable)
    # Without an evaluation list, a file list is not evaluated on its own training files.
    c.data.eval_dataset = ""
    with pytest.raises(ValueError, match="is one file list, with no 'validation' split"):
        offline.evaluate(c, workdir)


def _pack(root: str, out: str, name: str, *extra: str) -> int:
    return build.main(["pack", "--name", name, "--format", "list", "--video-root", root,
                       "--split", f"train={root}/list.txt", "--out", out, *extra])


def test_pack_keeps_the_same_videos_with_and_without_short_side_and_stores_true_counts(
        folder, tmp_path):
    root, readable, unreadable = folder
    out = str(tmp_path / "tfds")
    assert _pack(root, out, "plain") == 0
    assert _pack(root, out, "small", "--short-side", "32") == 0
    packed = {}
    for name in ("plain", "small"):
        directory = os.path.join(out, "video_folder", name, "1.0.0")
        source = sources.open_source(directory, "train")
        packed[name] = {os.path.basename(source[i]["path"].decode()): int(source[i]["num_frames"])
                        for i in range(len(source))}  # Text features come back as bytes
        skipped = open(os.path.join(directory, "skipped.tsv"), encoding="utf-8").read()
        assert {os.path.basename(line.split("\t")[0]) for line in skipped.splitlines()} == set(
            unreadable)
    assert set(packed["plain"]) == set(packed["small"]) == set(readable)
    for name, path in readable.items():  # frames a player shows, not the header's count
        assert packed["plain"][name] == packed["small"][name] == len(_sequential(_read(path)))
    assert packed["plain"]["cut_editlist.mp4"] == 50


def test_pack_refuses_other_inputs_under_an_existing_name_and_rebuilds_when_asked(
        folder, tmp_path, capsys):
    root, readable, unreadable = folder
    out = str(tmp_path / "tfds")
    directory = os.path.join(out, "video_folder", "k", "1.0.0")
    assert _pack(root, out, "k") == 0
    before = {f: os.path.getmtime(os.path.join(directory, f)) for f in os.listdir(directory)}
    skipped = open(os.path.join(directory, "skipped.tsv"), encoding="utf-8").read()
    assert _pack(root, out, "k") == 0  # the same inputs: reused, nothing rewritten
    assert "already packed from the same annotations" in capsys.readouterr().out
    assert open(os.path.join(directory, "skipped.tsv"), encoding="utf-8").read() == skipped
    assert _pack(root, out, "k", "--short-side", "32") == 2  # other options: refused
    err = capsys.readouterr().err
    assert "already holds a dataset built from other inputs (short_side: 0 -> 32)" in err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    after = {f: os.path.getmtime(os.path.join(directory, f)) for f in os.listdir(directory)}
    assert after == before  # nothing touched
    assert _pack(root, out, "k", "--short-side", "32", "--overwrite") == 0
    source = sources.open_source(directory, "train")
    assert len(source) == len(readable)
    import json
    info = json.load(open(os.path.join(directory, "build_info.json")))
    assert info["short_side"] == 32 and info["skipped"] == len(unreadable)


@pytest.mark.parametrize("argv, message", [
    (["pack", "--name", "x", "--format", "list", "--split", "train.txt", "--out", "o"],
     "error: --split takes NAME=ANNOTATION_FILE (e.g. --split train=/data/train.txt), got "
     "'train.txt'"),
    (["pack", "--name", "x", "--format", "list", "--split", "train=/no/such.txt", "--out", "o"],
     "error: --split train: annotation file /no/such.txt does not exist"),
    (["validate", "--format", "list", "--annotations", "/no/such.txt"],
     "error: --annotations /no/such.txt does not exist"),
])
def test_command_line_mistakes_give_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert build.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == message
    assert not os.listdir(tmp_path)  # nothing created


def test_bad_video_budget_counts_files_not_draws_and_takes_a_fraction():
    tracker = robust.BadVideoTracker(budget=2)
    for _ in range(50):  # one bad file met in 50 epochs is one bad file
        tracker.update({"skipped": np.array([1, 0]), "skipped_ids": np.array(["/v/a.mp4", ""])})
    assert tracker.distinct == 1 and tracker.count == 50
    by_fraction = robust.BadVideoTracker(budget=100, fraction=0.1, num_examples=30)  # 3 files
    by_fraction.update({"skipped": np.array([3]), "skipped_ids": np.array(["a;b;c"])})
    with pytest.raises(RuntimeError, match=r"4 videos failed to load, more than "
                                           r"data.max_bad_fraction=0.1 of 30 videos \(3\)"):
        by_fraction.update({"skipped": np.array([1]), "skipped_ids": np.array(["d"])})
