"""Every kind of bad file is skipped, replaced deterministically, counted and reported."""
import argparse
import io
import os

import av
import grain
import numpy as np
import pytest

from input_pipelines import builders, robust, sources, synthetic_videos
from tests.video_fixtures import audio_only

BAD_KINDS = ("missing", "empty", "truncated", "text", "audio_only", "corrupt_frames")


def _good_video(i: int) -> bytes:
    rng = np.random.default_rng([9, i])
    spec = synthetic_videos.sample_scene(rng, 64, 24)
    return synthetic_videos.encode_mp4(synthetic_videos.render(spec, 64, 24, rng))


def _bad_bytes(kind: str, good: bytes) -> bytes | None:
    n = len(good)
    if kind == "missing":
        return None
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[: n * 4 // 10]
    if kind == "text":
        return b"this is a subtitle file, not a video\n"
    if kind == "audio_only":
        return audio_only()
    corrupt = bytearray(good)  # header intact, the coded frames overwritten with noise
    corrupt[n // 4: 3 * n // 4] = np.random.default_rng(1).integers(
        0, 256, 3 * n // 4 - n // 4).astype(np.uint8).tobytes()
    return bytes(corrupt)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    lines = []
    for i in range(6):
        (root / f"good_{i}.mp4").write_bytes(_good_video(i))
        lines.append(f"good_{i}.mp4 {i % 3}")
    good = _good_video(0)
    for kind in BAD_KINDS:
        data = _bad_bytes(kind, good)
        if data is not None:
            (root / f"bad_{kind}.mp4").write_bytes(data)
        lines.append(f"bad_{kind}.mp4 0")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return str(root)


def _clip_fn():
    return builders.PretrainClip(num_frames=8, stride=2, crop_size=32, flip=False,
                                 token_grid=(4, 4, 4), mask_ratio=0.75)


def test_each_bad_kind_alone_is_skipped_and_named(mixed_folder):
    source = sources.open_source(f"list:{mixed_folder}/train.txt", "train")
    load = robust.SkipBadVideos(source, _clip_fn())
    for index in range(6, 6 + len(BAD_KINDS)):
        out = load(index, np.random.default_rng(index))
        assert out["video"].shape == (1, 8, 32, 32, 3)  # (views, T, H, W, C)
        failed = str(out["skipped_ids"]).split(";")
        assert os.path.basename(failed[0]) == f"bad_{BAD_KINDS[index - 6]}.mp4"
        assert int(out["skipped"]) == len(failed)
        assert all("bad_" in f for f in failed)  # replacements are bad or good, never lost


def test_pipeline_over_mixed_folder_counts_every_bad_video_and_is_deterministic(mixed_folder):
    source = sources.open_source(f"list:{mixed_folder}/train.txt", "train")
    n = len(source)

    def run():
        ds = (grain.MapDataset.range(n).seed(3).shuffle()
              .random_map(robust.SkipBadVideos(source, _clip_fn())).batch(4))
        return [ds[i] for i in range(len(ds))]

    batches = run()
    tracker = robust.BadVideoTracker(budget=1000)
    for b in batches:
        tracker.update(dict(b))
        assert b["video"].dtype == np.uint8 and b["video"].shape[1:] == (1, 8, 32, 32, 3)
    # Each of the 6 bad files sits at one index of the epoch: each fails at least once there.
    names = {os.path.basename(i) for i in tracker.ids}
    assert names == {f"bad_{k}.mp4" for k in BAD_KINDS}
    assert tracker.count == len(tracker.ids) >= len(BAD_KINDS)
    again = run()
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a["video"], b["video"])


def test_failure_budget_stops_with_the_list_of_files(mixed_folder):
    tracker = robust.BadVideoTracker(budget=1)
    batch = {"skipped": np.array([1, 0, 1], np.int32),
             "skipped_ids": np.array(["/v/bad_a.mp4", "", "/v/bad_b.mp4"])}
    with pytest.raises(RuntimeError, match=r"2 videos failed to load, more than "
                                           r"data.max_bad_videos=1.*bad_a.mp4.*bad_b.mp4"):
        tracker.update(batch)


def test_a_mostly_broken_dataset_fails_loudly(tmp_path):
    (tmp_path / "list.txt").write_text("".join(f"nope_{i}.mp4 0\n" for i in range(5)))
    source = sources.open_source(f"list:{tmp_path}/list.txt", "train")
    with pytest.raises(RuntimeError, match="20 videos in a row could not be loaded"):
        robust.SkipBadVideos(source, _clip_fn())(0, np.random.default_rng(0))


def test_validate_reports_every_bad_file(mixed_folder, tmp_path):
    from input_pipelines import build
    report = tmp_path / "report.tsv"
    rc = build.main(["validate", "--format", "list", "--annotations",
                     f"{mixed_folder}/train.txt", "--report", str(report), "--min-frames", "16"])
    assert rc == 1
    rows = [line.split("\t") for line in report.read_text().splitlines()[1:]]
    assert {os.path.basename(r[0]) for r in rows if r[1] == "unreadable"} == {
        f"bad_{k}.mp4" for k in BAD_KINDS}


def test_pack_folder_to_tfds_and_train_pipeline_reads_it(mixed_folder, tmp_path):
    from input_pipelines import build
    out = build.pack(argparse.Namespace(
        name="mixed", format="list", video_root=mixed_folder, labels=None, short_side=48,
        split=[f"train={mixed_folder}/train.txt"], out=str(tmp_path)))
    skipped = (tmp_path / "video_folder" / "mixed" / "1.0.0" / "skipped.tsv").read_text()
    assert skipped.count("\n") == len(BAD_KINDS)
    source = sources.open_source(out, "train")
    assert len(source) == 6
    ex = source[0]
    assert ex["num_frames"] == 24 and ex["fps"] == 25.0
    with av.open(io.BytesIO(ex["video"])) as c:  # re-encoded to a 48-pixel short side
        assert min(c.streams.video[0].codec_context.width,
                   c.streams.video[0].codec_context.height) == 48
    assert sorted(int(source[i]["label"]) for i in range(6)) == [0, 0, 1, 1, 2, 2]
