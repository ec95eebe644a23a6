"""Input pipeline: sampling indices, seeking decode, crops, and the whole grain pipeline."""
import io
from fractions import Fraction

import av
import numpy as np
import pytest

from input_pipelines import builders, decode, sampling, sources, synthetic_videos, transforms
from tests.helpers import REPO, tiny_config


def test_dense_indices_constant_stride_within_video():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(2000):
        idx = sampling.dense_indices(100, 16, 4, rng)
        assert (np.diff(idx) == 4).all()
        assert idx[0] >= 0 and idx[-1] <= 99
        starts.add(int(idx[0]))
    assert starts == set(range(0, 100 - 61 + 1))  # every start where the 61-frame span fits


def test_dense_indices_short_video_policies():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(sampling.dense_indices(10, 8, 2, rng),
                                  [0, 2, 4, 6, 8, 9, 9, 9])
    np.testing.assert_array_equal(sampling.dense_indices(10, 8, 2, rng, "loop"),
                                  [0, 2, 4, 6, 8, 0, 2, 4])
    np.testing.assert_array_equal(sampling.dense_indices(10, 8, 2, rng, "stretch"),
                                  [0, 1, 3, 4, 5, 6, 8, 9])
    with pytest.raises(ValueError, match="unknown short_video policy 'pad'"):
        sampling.dense_indices(10, 8, 2, rng, "pad")


def _frames_by_full_decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_seeking_decode_returns_exactly_the_requested_frames():
    rng = np.random.default_rng(3)
    spec = synthetic_videos.sample_scene(rng, 64, 60)
    data = synthetic_videos.encode_mp4(synthetic_videos.render(spec, 64, 60, rng),
                                       keyframe_interval=8)
    full = _frames_by_full_decode(data)
    assert len(full) == 60
    for idx in ([37, 41, 45, 49], [0, 1, 2], [59], [50, 10, 30, 10]):
        np.testing.assert_array_equal(decode.decode_frames(data, np.array(idx)), full[idx])


def test_decode_rejects_frames_past_the_end():
    rng = np.random.default_rng(4)
    spec = synthetic_videos.sample_scene(rng, 32, 10)
    data = synthetic_videos.encode_mp4(synthetic_videos.render(spec, 32, 10, rng))
    with pytest.raises(decode.DecodeError, match=r"requested from a video of 10 frames"):
        decode.decode_frames(data, np.array([8, 9, 10, 11]))


def test_variable_frame_rate_video_indexes_frames_in_presentation_order():
    """Irregular gaps between timestamps (40 ms, sometimes 100 ms): index i is the i-th frame
    shown, not round(time * average fps), which would skip and repeat frames here."""
    rng = np.random.default_rng(5)
    frames = synthetic_videos.render(synthetic_videos.sample_scene(rng, 64, 40), 64, 40, rng)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        s.codec_context.gop_size = 8
        t = 0
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            t += 40 if i % 3 else 100
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    data = buf.getvalue()
    full = _frames_by_full_decode(data)
    for idx in ([1, 2, 4, 5], [33, 36, 39], [20, 7, 7, 38]):
        np.testing.assert_array_equal(decode.decode_frames(data, np.array(idx)), full[idx])


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied(degrees):
    """A portrait scene stored as landscape frames + a display rotation (as phones record) comes
    out upright: the stored pixels of the same encode, turned by the metadata."""
    rng = np.random.default_rng(6)
    upright = synthetic_videos.render(synthetic_videos.sample_scene(rng, 48, 6), 48, 6, rng)
    upright = np.ascontiguousarray(upright[:, :, 8:40])  # (6, 48, 32, 3) portrait
    turns = degrees // 90
    stored = np.ascontiguousarray(np.rot90(upright, -turns, axes=(1, 2)))  # what the camera wrote
    data = synthetic_videos.encode_mp4(stored, display_rotation=degrees)
    # The stored frames of this very encode (to_ndarray ignores the display matrix): a second
    # encode of the same frames is not bit-identical (libx264's threads), so it is no reference.
    plain = _frames_by_full_decode(data)
    frames = decode.decode_video_frames(data, np.array([1, 4]))
    assert decode.display_size(frames[0]) == (32, 48)
    out = decode.decode_frames(data, np.array([1, 4]))
    np.testing.assert_array_equal(out, np.rot90(plain[[1, 4]], turns, axes=(1, 2)))
    assert np.abs(out.astype(int) - upright[[1, 4]]).mean() < 3  # upright up to compression
    # Crops are taken in the upright frame: the full-frame box resized is the upright clip.
    crop = transforms.scaled_crop(frames, (0, 8, 32, 32), 32, "BILINEAR")
    np.testing.assert_array_equal(crop, out[:, 8:40])


def test_multi_scale_crop_box_follows_reference_grid():
    rng = np.random.default_rng(0)
    base = 240  # 320x240 frame, output 224: sides int(240 * s) = 240, 210, 180, 158
    allowed = {int(base * s) for s in transforms.MULTI_SCALE_CROP_SCALES}
    allowed = {224 if abs(s - 224) < 3 else s for s in allowed}
    for _ in range(300):
        x, y, w, h = transforms.multi_scale_crop_box(320, 240, 224, rng)
        assert w in allowed and h in allowed
        order = sorted(allowed, reverse=True)
        assert abs(order.index(w) - order.index(h)) <= 1  # max_distort 1
        assert x % ((320 - w) // 4 or 1) == 0 and y % ((240 - h) // 4 or 1) == 0
        assert x + w <= 320 and y + h <= 240


def _yuv_frames(rgb: np.ndarray) -> list:
    return [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p") for f in rgb]


def _np_crop_resize(rgb: np.ndarray, box, size: int) -> np.ndarray:
    """Independent reference: crop, then bilinear resize with half-pixel centres (float64)."""
    x, y, w, h = box
    crop = rgb[y:y + h, x:x + w].astype(np.float64)
    ys = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
    xs = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = crop[y0][:, x0] * (1 - wx) + crop[y0][:, x1] * wx
    bottom = crop[y1][:, x0] * (1 - wx) + crop[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def test_scaled_crop_matches_crop_then_bilinear_resize():
    # A smooth 240x320 scene (gradients and a soft blob), 3 frames shifted in time.
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float64)
    frames = []
    for t in range(3):
        r = 40 + 150 * xx / 320
        g = 60 + 120 * yy / 240
        b = 128 + 100 * np.exp(-((xx - 100 - 20 * t) ** 2 + (yy - 120) ** 2) / 2000)
        frames.append(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8))
    yuv = _yuv_frames(np.stack(frames))
    box = (40, 30, 180, 158)  # a multi-scale crop: 180 wide, 158 high
    for interpolation in ("BILINEAR", "FAST_BILINEAR"):
        out = transforms.scaled_crop(yuv, box, 112, interpolation)
        assert out.shape == (3, 112, 112, 3) and out.dtype == np.uint8
        for t in range(3):
            ref = _np_crop_resize(decode.to_rgb(yuv[t]), box, 112)
            err = np.abs(out[t].astype(np.float64) - ref)
            # Bilinear weights differ only at the crop border (the scaled frame sees pixels
            # outside the box) and swscale rounds in fixed point: about a level on average.
            assert err.mean() < 1.5 and np.percentile(err, 99) < 6, (interpolation, err.mean(),
                                                                      err.max())


def test_scaled_crop_is_the_same_on_every_frame():
    rgb = np.random.default_rng(0).integers(0, 255, (1, 40, 50, 3)).astype(np.uint8)
    out = transforms.scaled_crop(_yuv_frames(np.repeat(rgb, 4, axis=0)), (5, 3, 30, 30), 16)
    assert out.shape == (4, 16, 16, 3)
    assert (out == out[0]).all()


def test_pipeline_batches_are_uint8_and_deterministic(data_dir):
    c = tiny_config(data_dir)
    from internvideo_jax.tasks import get_task
    task = get_task(c)
    first = []
    for _ in range(2):
        ds, epoch = task.train_dataset(seed=7, local_batch=4, process_index=0, process_count=1)
        it = iter(ds)
        first.append(next(it))
    assert epoch == 24
    b = first[0]
    assert b["video"].shape == (4, 16, 64, 64, 3) and b["video"].dtype == np.uint8
    assert b["mask"].shape == (4, 8 * 8 * 8) and (b["mask"].sum(1) == 8 * 57).all()
    np.testing.assert_array_equal(first[0]["video"], first[1]["video"])
    np.testing.assert_array_equal(first[0]["mask"], first[1]["mask"])
    other = next(iter(task.train_dataset(seed=8, local_batch=4, process_index=0,
                                         process_count=1)[0]))
    assert (other["video"] != b["video"]).any()


def test_process_shards_are_disjoint_and_cover_the_source(data_dir):
    import grain
    src = sources.demo_source("train", "small", data_dir)
    ids = []
    for p in range(3):
        shard = builders.shard_for_process(grain.MapDataset.source(src), p, 3)
        ids.append([shard[i]["video_id"] for i in range(len(shard))])
    flat = [v for s in ids for v in s]
    assert len(flat) == len(set(flat)) == 24


def test_processes_building_the_demo_dataset_at_once_both_succeed(tmp_path, data_dir):
    """Two processes building into one empty data directory (two runs, test workers, hosts on a
    shared disk): without the lock the later one failed to rename its copy into place."""
    import subprocess
    import sys
    code = ("import sys; from input_pipelines import sources; "
            "s = sources.demo_source('validation', 'small', sys.argv[1]); "
            "print(len(s), s[3]['video_id'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    reference = sources.demo_source("validation", "small", data_dir)
    expected = f"{len(reference)} {reference[3]['video_id']}"
    assert [out.strip().splitlines()[-1] for out, _ in outs] == [expected, expected]


def test_segment_indices_reference_rule_by_hand():
    # 33 frames, 8 segments: L = 4; segment i = [4i, 4i + 4].
    np.testing.assert_array_equal(sampling.segment_indices(33, 8, None),
                                  [2, 6, 10, 14, 18, 22, 26, 30])
    rng = np.random.default_rng(0)
    for _ in range(100):
        idx = sampling.segment_indices(33, 8, rng)
        assert all(4 * i <= v <= 4 * i + 4 for i, v in enumerate(idx))
    # Fewer frames than segments: indices repeat but stay in range.
    assert sampling.segment_indices(5, 8, None).max() <= 4


def test_uniform_indices_match_linspace_int():
    np.testing.assert_array_equal(sampling.uniform_indices(100, 8), [0, 14, 28, 42, 56, 70, 84, 99])


def test_dense_test_views_evenly_spaced():
    views = sampling.dense_test_views(100, 16, 4, 5)  # span 61, room 39: starts 0, 9, 19, 29, 39
    assert [int(v[0]) for v in views] == [0, 9, 19, 29, 39]
    assert all((np.diff(v) == 4).all() for v in views) and views[-1][-1] == 99
    assert int(sampling.dense_test_views(100, 16, 4, 1)[0][0]) == 19


def test_three_crops_along_the_long_side():
    assert transforms.short_side_size(640, 480, 224) == (299, 224)
    assert transforms.three_crop_boxes(299, 224, 224) == [(0, 0, 224, 224), (37, 0, 224, 224),
                                                          (75, 0, 224, 224)]
    assert transforms.three_crop_boxes(224, 300, 224) == [(0, 0, 224, 224), (0, 38, 224, 224),
                                                          (0, 76, 224, 224)]


def test_repeated_augmentation_views_share_one_decode(data_dir):
    from internvideo_jax.tasks import get_task
    c = tiny_config(data_dir, **{"data.num_repeats": 2})
    ds, clips_per_epoch = get_task(c).train_dataset(seed=0, local_batch=4, process_index=0,
                                                    process_count=1)
    assert clips_per_epoch == 2 * 24  # counted in clips: every video once, 2 views each
    b = next(iter(ds))
    assert b["video"].shape == (4, 16, 64, 64, 3) and b["mask"].shape == (4, 512)
    assert b["skipped"].shape == (4,) and b["skipped"][1] == b["skipped"][3] == 0  # once a video
    # Views 0 and 1 come from one video: different crops and masks of the same clip. Their mean
    # colours agree far better than those of views from two different videos.
    means = b["video"].reshape(4, -1, 3).mean(1)
    assert (b["mask"][0] != b["mask"][1]).any()
    assert np.abs(means[0] - means[1]).sum() < np.abs(means[0] - means[2]).sum()


def test_reencoding_bakes_the_rotation_into_the_pixels():
    from input_pipelines import build
    rng = np.random.default_rng(7)
    stored = synthetic_videos.render(synthetic_videos.sample_scene(rng, 64, 4), 64, 4, rng)
    stored = np.ascontiguousarray(stored[:, 16:48])  # (4, 32, 64, 3) landscape as stored
    data = synthetic_videos.encode_mp4(stored, display_rotation=90)
    out = build.reencode_short_side(data, 32)  # the size it has: only the rotation changes
    frames = decode.decode_video_frames(out, np.arange(4))
    assert decode.quarter_turns(frames[0]) == 0  # no metadata left: upright in the pixels
    assert decode.display_size(frames[0]) == (32, 64)  # portrait
    again = decode.decode_frames(out, np.arange(4)).astype(int)  # (4, 64, 32, 3)
    upright = decode.decode_frames(data, np.arange(4)).astype(int)
    # Re-compression costs ~3 levels; a wrong orientation (e.g. upside down) costs ~70.
    assert np.abs(again - upright).mean() < 6


def test_pretrain_clip_segment_sampler_takes_tsn_frames():
    """sampler='segment' (UMT's pretraining clips): a random frame in each of T segments, then
    the same crop and tube mask draws as the dense clip, from the same generator."""
    from input_pipelines import masking
    ex = synthetic_videos.make_example(0, 3, size=64, num_frames=32)
    clip = builders.PretrainClip(8, 4, 32, False, (8, 4, 4), 0.75, sampler="segment")
    out = clip(ex, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    with builders.open_video(ex) as video:
        idx = sampling.segment_indices(video.num_frames, 8, rng)
        frames = video.frames(idx)
        box = transforms.multi_scale_crop_box(*decode.display_size(frames[0]), 32, rng)
        want = transforms.scaled_crop(frames, box, 32)
    assert len(set(idx.tolist())) == 8 and idx.max() >= 28  # spread over the whole video
    np.testing.assert_array_equal(out["video"][0], want)
    np.testing.assert_array_equal(out["mask"][0], masking.tube_mask((8, 4, 4), 0.75, rng))
