"""AVA-style detection data: the CSV / pbtxt readers, keyframe sources, the clip's frames by time,
boxes that stay on the pixels they mark through crop / scale / flip / padding, and the embedded
demo_ava dataset (its boxes on its rendered shapes, its files, determinism, routing)."""
import os

import av
import numpy as np
import pytest

from input_pipelines import ava, decode, sources, synthetic_ava as sa
from input_pipelines.synthetic_videos import COLOURS, encode_mp4


def _write(tmp_path, name: str, text: str) -> str:
    path = os.path.join(tmp_path, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# --- Readers ------------------------------------------------------------------------------------

def test_ground_truth_rows_merge_per_box(tmp_path):
    path = _write(tmp_path, "gt.csv",
                  "vid_a,0902,0.1,0.2,0.5,0.9,12,0\n"
                  "vid_a,0902,0.1,0.2,0.5,0.9,80,0\n"
                  "vid_a,0902,0.1,0.2,0.5,0.9,12,0\n"      # a repeated row adds nothing
                  "vid_a,0902,0.1,0.2,0.5,0.9,17,1\n"      # same box, another person
                  "vid_a,0902,0.6,0.0,1.0,1.0,1,2\n"
                  "\n"
                  "vid_a,0903,0.6,0.0,1.0,1.0,3\n"         # v1-style row: no person id
                  "vid_b,1798,0.0,0.0,1.0,1.0,5,0\n")
    boxes = ava.read_boxes(path)
    assert sorted(boxes) == [("vid_a", 902), ("vid_a", 903), ("vid_b", 1798)]
    a = boxes[("vid_a", 902)]
    np.testing.assert_allclose(a["boxes"], [[0.1, 0.2, 0.5, 0.9], [0.1, 0.2, 0.5, 0.9],
                                            [0.6, 0, 1, 1]], atol=1e-7)
    assert a["boxes"].dtype == np.float32
    assert a["actions"] == [(12, 80), (17,), (1,)]
    np.testing.assert_array_equal(a["person_ids"], [0, 1, 2])
    assert boxes[("vid_a", 903)]["person_ids"].tolist() == [-1]
    labels = ava.multi_hot(a["actions"], classes=[1, 12, 17, 80])
    np.testing.assert_array_equal(labels, [[0, 1, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]])
    # Ids outside the class list (AVA's 20 unevaluated classes) are left out.
    np.testing.assert_array_equal(ava.multi_hot([(12, 80)], classes=[12]), [[1]])


def test_detections_keep_box_and_class_scores(tmp_path):
    path = _write(tmp_path, "det.csv",
                  "vid_a,0902,0.1,0.2,0.5,0.9,,0.97\n"     # a person detector's row
                  "vid_a,0902,0.6,0.1,0.9,0.8,,0.40\n"
                  "vid_a,0905,0.1,0.2,0.5,0.9,3,0.20\n"    # a per-class result file's rows
                  "vid_a,0905,0.1,0.2,0.5,0.9,7,0.85\n"
                  "vid_a,0905,0.2,0.2,0.5,0.9,-1,0.5\n")
    det = ava.read_boxes(path, detections=True)
    a = det[("vid_a", 902)]
    np.testing.assert_allclose(a["scores"], [0.97, 0.40], rtol=1e-6)
    assert a["class_scores"] == [{}, {}]
    assert "person_ids" not in a and "actions" not in a
    b = det[("vid_a", 905)]
    assert len(b["boxes"]) == 2
    np.testing.assert_allclose(b["scores"], [0.85, 0.5], rtol=1e-6)
    assert b["class_scores"][0] == pytest.approx({3: 0.20, 7: 0.85})
    assert b["class_scores"][1] == {}


@pytest.mark.parametrize("text, detections, message", [
    ("vid,902.5,0.1,0.2,0.5,0.9,1,0\n", False, "timestamp '902.5'"),
    ("vid,0902,0.5,0.2,0.1,0.9,1,0\n", False, "0 <= x1 <= x2 <= 1"),
    ("vid,0902,0.1,0.2,0.5,1.2,1,0\n", False, "0 <= x1 <= x2 <= 1"),
    ("vid,0902,0.1,0.2,0.5,abc,1,0\n", False, "is not 4 numbers"),
    ("vid,0902,0.1,0.2,0.5,0.9\n", False, "6 columns"),
    ("vid,0902,0.1,0.2,0.5,0.9,,0\n", False, "without an action_id"),
    ("vid,0902,0.1,0.2,0.5,0.9,talk,0\n", False, "action_id 'talk'"),
    ("vid,0902,0.1,0.2,0.5,0.9,1\n", True, "7 columns"),
    ("vid,0902,0.1,0.2,0.5,0.9,,high\n", True, "score 'high'"),
])
def test_bad_rows_name_file_and_line(tmp_path, text, detections, message):
    path = _write(tmp_path, "bad.csv", "vid,0902,0.1,0.2,0.5,0.9,1,0\n\n" + text)
    with pytest.raises(ava.AVAFileError, match=message) as e:
        ava.read_boxes(path, detections=detections)
    assert f"{path}:3:" in str(e.value)


def test_exclusions(tmp_path):
    path = _write(tmp_path, "ex.csv", "vid_a,0902\n\nvid_b,1000\n")
    assert ava.read_exclusions(path) == {("vid_a", 902), ("vid_b", 1000)}
    assert ava.read_exclusions(_write(tmp_path, "empty.csv", "")) == set()
    with pytest.raises(ava.AVAFileError, match=r"bad\.csv:1: 3 columns"):
        ava.read_exclusions(_write(tmp_path, "bad.csv", "vid_a,0902,1\n"))


def test_label_map(tmp_path):
    path = _write(tmp_path, "ava.pbtxt",
                  '# a comment\nlabel {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n'
                  '  label_type: PERSON_MOVEMENT\n}\nlabel {\n  name: "carry/hold (an object)"\n'
                  '  label_id: 17\n  label_type: OBJECT_MANIPULATION\n}\n')
    assert ava.read_label_map(path) == [(1, "bend/bow (at the waist)"),
                                        (17, "carry/hold (an object)")]
    item = _write(tmp_path, "item.pbtxt", 'item {\n  name: "stand"\n  id: 12\n}\n')
    assert ava.read_label_map(item) == [(12, "stand")]
    assert ava.read_label_map(_write(tmp_path, "demo.pbtxt", sa.label_map_text())) == \
        list(zip(sa.ACTION_IDS, sa.CLASSES))
    repeated = _write(tmp_path, "rep.pbtxt", 'item {\n name: "a"\n id: 1\n}\nitem {\n name: "b"\n'
                                            ' id: 1\n}\n')
    with pytest.raises(ava.AVAFileError, match=r"rep\.pbtxt:5: class id 1 repeats"):
        ava.read_label_map(repeated)
    with pytest.raises(ava.AVAFileError, match=r"noid\.pbtxt:1: .* without a name and an id"):
        ava.read_label_map(_write(tmp_path, "noid.pbtxt", 'item {\n name: "a"\n}\n'))


# --- The keyframe source ------------------------------------------------------------------------

class _Movies:
    """A stand-in video source: examples {video, video_id} with a describe."""

    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"video": f"bytes of {self.ids[i]}".encode(), "video_id": self.ids[i].encode()}

    def describe(self, i):
        return f"/movies/{self.ids[i]}.mkv"


def test_keyframe_source_ground_truth(tmp_path):
    boxes = ava.read_boxes(_write(tmp_path, "gt.csv",
                                  "m2,0905,0.1,0.2,0.5,0.9,3,0\n"
                                  "m1,0903,0.1,0.2,0.5,0.9,1,0\n"
                                  "m1,0902,0.1,0.2,0.5,0.9,1,0\n"
                                  "m1,0902,0.1,0.2,0.5,0.9,3,0\n"
                                  "m1,0902,0.6,0.2,0.9,0.9,80,1\n"))
    src = ava.KeyframeSource(_Movies(["m1", "m2"]), boxes, classes=[1, 3],
                             exclusions={("m1", 903)}, time_offset=900)
    assert src.keyframes == [("m1", 902), ("m2", 905)]
    ex = src[0]
    assert ex["video"] == b"bytes of m1" and ex["index"] == 0
    assert ex["timestamp"] == 902 and ex["keyframe_time"] == 2.0
    np.testing.assert_array_equal(ex["labels"], [[1, 1], [0, 0]])  # 80 is not a class here
    np.testing.assert_array_equal(ex["scores"], [1, 1])
    assert src[1]["video"] == b"bytes of m2" and src[1]["keyframe_time"] == 5.0
    assert src.describe(1) == "/movies/m2.mkv@905"
    with pytest.raises(ValueError, match=r"1 movies .* not in the video source of 1 videos: "
                                         r"\['m2'\]"):
        ava.KeyframeSource(_Movies(["m1"]), boxes, classes=[1, 3])
    with pytest.raises(ValueError, match="3 video ids for a source of 2 videos"):
        ava.KeyframeSource(_Movies(["m1", "m2"]), boxes, [1], video_ids=["m1", "m2", "m3"])


def test_keyframe_source_detections_threshold(tmp_path):
    det = ava.read_boxes(_write(tmp_path, "det.csv",
                                "m1,0902,0.1,0.2,0.5,0.9,,0.95\n"
                                "m1,0902,0.6,0.2,0.9,0.9,,0.5\n"
                                "m1,0903,0.1,0.2,0.5,0.9,,0.3\n"), detections=True)
    src = ava.KeyframeSource(_Movies(["m1"]), det, classes=[1, 2, 3], min_score=0.8)
    assert src.keyframes == [("m1", 902)]  # 903 is left without a box
    ex = src[0]
    np.testing.assert_allclose(ex["boxes"], [[0.1, 0.2, 0.5, 0.9]])
    np.testing.assert_allclose(ex["scores"], [0.95])
    np.testing.assert_array_equal(ex["labels"], np.zeros((1, 3)))
    assert len(ava.KeyframeSource(_Movies(["m1"]), det, classes=[1])) == 2  # no threshold
    truth = ava.read_boxes(_write(tmp_path, "gt.csv", "m1,0902,0.1,0.2,0.5,0.9,1,0\n"))
    with pytest.raises(ValueError, match=r"min_score is for detections.*\('m1', 902\)"):
        ava.KeyframeSource(_Movies(["m1"]), truth, classes=[1], min_score=0.8)


# --- Frames by time -----------------------------------------------------------------------------

def test_keyframe_indices_by_hand():
    times = np.arange(300) / 30.0  # 10 s at 30 fps
    np.testing.assert_array_equal(ava.keyframe_indices(times, 2.0, 8, 4),
                                  [44, 48, 52, 56, 60, 64, 68, 72])  # frame 60 at position 4
    np.testing.assert_array_equal(ava.keyframe_indices(times, 0.2, 8, 4),
                                  [0, 0, 0, 2, 6, 10, 14, 18])  # clamped at the start
    np.testing.assert_array_equal(ava.keyframe_indices(times, 9.9, 8, 4),
                                  [281, 285, 289, 293, 297, 299, 299, 299])  # and at the end
    times25 = np.arange(200) / 25.0  # 8 s at 25 fps: the keyframe at 2 s is frame 50, not 60
    np.testing.assert_array_equal(ava.keyframe_indices(times25, 2.0, 4, 2), [46, 48, 50, 52])
    # By time: 6.25 samples / s at 25 fps are 4 frames apart; 7.5 / s at 30 fps too.
    np.testing.assert_array_equal(ava.keyframe_indices(times25, 3.0, 16, 4, sample_fps=6.25),
                                  ava.keyframe_indices(times25, 3.0, 16, 4))
    np.testing.assert_array_equal(ava.keyframe_indices(times, 3.0, 16, 4, sample_fps=7.5),
                                  ava.keyframe_indices(times, 3.0, 16, 4))
    # A keyframe between frames takes the one shown then (the last at or before it).
    assert ava.keyframe_indices(times25, 2.03, 1, 4)[0] == 50


def _numbered_video(num_frames: int, fps: int, size=(64, 48)) -> bytes:
    """Grey frames whose level is 2 x their index (lossless H.264: decoded within 1 level)."""
    w, h = size
    frames = np.repeat((2 * np.arange(num_frames, dtype=np.uint8))[:, None, None, None],
                       h * w * 3).reshape(num_frames, h, w, 3)
    return encode_mp4(frames, fps=fps, crf=0)


def _example(video: bytes, boxes, labels, t: float, scores=None) -> dict:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {"video": video, "index": 7, "keyframe_time": t, "boxes": boxes,
            "labels": np.asarray(labels, np.float32).reshape(len(boxes), -1),
            "scores": np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores)}


@pytest.mark.parametrize("fps", [25, 30])
def test_clip_frames_follow_the_stream_timestamps(fps):
    video = _numbered_video(4 * fps, fps)  # 4 s
    clip = ava.KeyframeClip(num_frames=8, rate=3, crop_size=32, max_boxes=2, num_classes=1,
                            jitter=None, flip=False)
    for t, keyframe in [(2.0, 2 * fps), (0.2, round(0.2 * fps)), (3.9, int(3.9 * fps + 1e-6))]:
        out = clip(_example(video, [[0.1, 0.1, 0.9, 0.9]], [[1]], t), np.random.default_rng(0))
        levels = out["video"][0].reshape(8, -1).mean(1)
        expected = np.clip(keyframe + 3 * (np.arange(8) - 4), 0, 4 * fps - 1)
        np.testing.assert_allclose(levels / 2, expected, atol=0.6)
    with pytest.raises(ValueError, match="keyframe 7 is at 900.000 s of a 4.000 s video"):
        clip(_example(video, [[0.1, 0.1, 0.9, 0.9]], [[1]], 900.0), np.random.default_rng(0))


# --- Boxes on their pixels ----------------------------------------------------------------------

W, H = 160, 120
# Two rectangles (pixels [x1, y1, x2, y2]) well apart: white and mid grey on black.
RECTS = {255: (40, 30, 90, 80), 128: (110, 60, 150, 110)}


def _rect_frames(num_frames=2) -> np.ndarray:
    frames = np.zeros((num_frames, H, W, 3), np.uint8)
    for level, (x1, y1, x2, y2) in RECTS.items():
        frames[:, y1:y2, x1:x2] = level
    return frames


def _normalised(rect) -> list[float]:
    x1, y1, x2, y2 = rect
    return [x1 / W, y1 / H, x2 / W, y2 / H]


def _pixel_box(image: np.ndarray, level: int, near: np.ndarray) -> np.ndarray | None:
    """[x1, y1, x2, y2] (pixel edges) of the pixels past half of `level` within 3 pixels of
    box `near`, or None if there are none."""
    grey = image[..., 0].astype(np.float32)
    x1, y1, x2, y2 = near
    yy, xx = np.mgrid[0:grey.shape[0], 0:grey.shape[1]] + 0.5
    around = (xx > x1 - 3) & (xx < x2 + 3) & (yy > y1 - 3) & (yy < y2 + 3)
    ys, xs = np.nonzero(around & (grey > level / 2))
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _assert_encloses(image: np.ndarray, box: np.ndarray, level: int) -> None:
    found = _pixel_box(image, level, box)
    assert found is not None, (box, level)
    np.testing.assert_allclose(found, box, atol=1.0, err_msg=f"level {level}")


@pytest.mark.parametrize("view", [
    ava.View((W, H), (0, 0), (W, H)),                      # identity
    ava.View((W, H), (0, 0), (W, H), flip=True),
    ava.View((128, 96), (20, 10), (96, 96)),                # downscaled, cropped
    ava.View((128, 96), (20, 0), (96, 96), flip=True),
    ava.View((256, 192), (100, 60), (112, 112)),            # upscaled, both rectangles cut
    ava.View((256, 192), (100, 60), (112, 112), flip=True),
    ava.View((107, 80), (0, 0), (112, 96)),                 # padded, as evaluation's canvas
])
def test_views_move_boxes_with_pixels(view):
    frames = [av.VideoFrame.from_ndarray(f, format="rgb24") for f in _rect_frames()]
    image = ava.render_view(frames, view)[0]
    assert image.shape == (view.size[1], view.size[0], 3)
    region = view.image_box
    for level, rect in RECTS.items():
        box = ava.clip_boxes(ava.view_boxes([_normalised(rect)], view), region)[0]
        if ava.area(box[None])[0] > 4:
            _assert_encloses(image, box, level)
    # Nothing but zeros outside the frame's part of the window (padding).
    x1, y1, x2, y2 = region.astype(int)
    assert image[y2:].max(initial=0) == 0 and image[:, x2:].max(initial=0) == 0


def test_flip_mirrors_and_swaps():
    view = ava.View((100, 50), (0, 0), (100, 50), flip=True)
    np.testing.assert_allclose(ava.view_boxes([[0.1, 0.2, 0.3, 0.6]], view),
                               [[70, 10, 90, 30]], atol=1e-5)


RECT_CLASS = {255: 0, 128: 1}  # the white rectangle's box has class 0, the grey's class 1


def _rect_example() -> dict:
    video = encode_mp4(_rect_frames(40), fps=25, crf=0)
    rects = [RECTS[255], RECTS[128]]
    return _example(video, [_normalised(r) for r in rects], [[1, 0], [0, 1]], 0.8)


@pytest.mark.parametrize("scale_range", [(1.0, 1.0), (1.2, 1.6)])
def test_training_clip_boxes_enclose_their_rectangles(scale_range):
    example = _rect_example()
    clip = ava.KeyframeClip(num_frames=4, rate=2, crop_size=96, max_boxes=4, num_classes=2,
                            jitter=None, flip=True, scale_range=scale_range)
    flips, dropped = set(), 0
    for seed in range(12):
        out = clip(example, np.random.default_rng(seed))
        assert out["video"].shape == (1, 4, 96, 96, 3) and out["video"].dtype == np.uint8
        assert out["boxes"].shape == (1, 4, 4) and out["labels"].shape == (1, 4, 2)
        assert out["index"].tolist() == [7] and out["image_size"].tolist() == [[96, 96]]
        mask = out["box_mask"][0]
        assert mask.tolist() == sorted(mask.tolist(), reverse=True)  # boxes first, then padding
        for box, labels in zip(out["boxes"][0][mask], out["labels"][0][mask]):
            level = [lv for lv, c in RECT_CLASS.items() if labels[c]][0]  # labels follow boxes
            _assert_encloses(out["video"][0, 2], box, level)
            assert np.all(box[:2] >= 0) and np.all(box[2:] <= 96)
        np.testing.assert_array_equal(out["boxes"][0][~mask], 0)
        np.testing.assert_array_equal(out["labels"][0][~mask], 0)
        # A rectangle the crop keeps more of than min_visible (0.1) has its box, one it keeps
        # less of has none: counted in pixels, within the rectangle's whole box in the output.
        view = ava.train_view(W, H, 96, scale_range, True, np.random.default_rng(seed))
        flips.add(view.flip)
        for level, c in RECT_CLASS.items():
            has_box = bool(out["labels"][0][mask][:, c].any())
            whole = ava.view_boxes([_normalised(RECTS[level])], view)[0]
            x1, y1, x2, y2 = np.clip(np.round(whole).astype(int), 0, 96)
            visible = (np.abs(out["video"][0, 2, y1:y2, x1:x2, 0].astype(int) - level) < 40).sum()
            fraction = visible / ava.area(whole[None])[0]
            assert has_box == (fraction > 0.1) or abs(fraction - 0.1) < 0.03, (seed, fraction)
            dropped += not has_box
    assert flips == {False, True}
    assert dropped > 0 if scale_range[0] > 1 else dropped == 0  # larger frames, cut rectangles


def test_evaluation_clip_keeps_the_whole_frame():
    example = _rect_example()
    example["scores"] = np.asarray([0.9, 0.85], np.float32)
    clip = ava.KeyframeClip(num_frames=4, rate=2, crop_size=96, max_boxes=3, num_classes=2,
                            train=False, eval_extend=None)
    short, longest, canvas = clip.eval_sizes
    assert (short, longest, canvas) == (110, 199, (208, 112))
    out = clip(example, 5)
    assert out["video"].shape == (1, 4, 112, 208, 3)
    scale = 110 / H  # short side 110: the frame is 147 x 110, within the 199 cap
    assert out["image_size"].tolist() == [[110, 147]]
    for box, level in zip(out["boxes"][0][:2], RECTS):
        np.testing.assert_allclose(box, np.asarray(RECTS[level]) * np.array(
            [147 / W, scale, 147 / W, scale]), atol=1e-4)
        _assert_encloses(out["video"][0, 1], box, level)
    assert out["box_mask"].tolist() == [[True, True, False]]
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.85, 0])
    np.testing.assert_allclose(out["source_boxes"][0][:2], example["boxes"])
    assert out["index"].tolist() == [5]
    assert out["video"][0, :, 110:].max() == 0 and out["video"][0, :, :, 147:].max() == 0
    blank = clip.blank(5)
    assert {k: (v.shape, v.dtype) for k, v in blank.items()} == \
        {k: (v.shape, v.dtype) for k, v in out.items()}
    # The reference's test-time extension: 10 % wider, 5 % taller, clipped to the frame.
    extended = ava.KeyframeClip(num_frames=4, rate=2, crop_size=96, max_boxes=3, num_classes=2,
                                train=False)(example, 5)["boxes"][0, 0]
    x1, y1, x2, y2 = out["boxes"][0, 0]
    np.testing.assert_allclose(extended, [x1 - 0.05 * (x2 - x1), y1 - 0.025 * (y2 - y1),
                                          x2 + 0.05 * (x2 - x1), y2 + 0.025 * (y2 - y1)],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="keyframe 5 has 2 boxes, more than max_boxes=1"):
        ava.KeyframeClip(num_frames=4, rate=2, crop_size=96, max_boxes=1, num_classes=2,
                         train=False)(example, 5)


def test_eval_view_reference_sizes():
    clip = ava.KeyframeClip()  # 224: the reference's 256 short side, long side <= 464
    assert clip.eval_sizes == (256, 464, (464, 256))
    assert ava.eval_view(640, 360, 256, 464, (464, 256)).resized == (455, 256)  # 16:9
    assert ava.eval_view(1280, 544, 256, 464, (464, 256)).resized == (464, 197)  # 2.35:1
    assert ava.eval_view(360, 640, 256, 464, (464, 256)).resized == (144, 256)  # portrait


def test_a_keyframe_left_without_boxes_is_all_padding():
    example = _rect_example()
    example.update(boxes=np.zeros((0, 4), np.float32), labels=np.zeros((0, 2), np.float32),
                   scores=np.zeros(0, np.float32))
    out = ava.KeyframeClip(num_frames=2, rate=1, crop_size=96, max_boxes=3, num_classes=2)(
        example, np.random.default_rng(0))
    assert not out["box_mask"].any() and not out["boxes"].any() and not out["labels"].any()


def test_more_boxes_than_max_keep_a_random_subset():
    example = _rect_example()
    many = np.tile(example["boxes"], (5, 1))  # 10 boxes
    example.update(boxes=many, labels=np.tile(example["labels"], (5, 1)),
                   scores=np.ones(10, np.float32))
    clip = ava.KeyframeClip(num_frames=2, rate=1, crop_size=112, max_boxes=3, num_classes=2,
                            scale_range=(1.0, 1.0), jitter=None, flip=False)
    out = clip(example, np.random.default_rng(0))
    assert out["box_mask"].tolist() == [[True, True, True]]


def test_jitter_and_extend():
    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([[10, 20, 50, 100]], np.float32), (2000, 1))  # 40 x 80
    j = ava.jitter_boxes(boxes, (0.2, 0.1, 0.1, 0.05), rng) - boxes
    for column, (lo, hi) in enumerate([(-8, 4), (-8, 4), (-4, 8), (-4, 8)]):
        assert lo <= j[:, column].min() < lo + 0.5 and hi - 0.5 < j[:, column].max() <= hi
    np.testing.assert_allclose(ava.extend_boxes(np.array([[10, 20, 50, 100]], np.float32),
                                                (0.1, 0.05)), [[8, 18, 52, 102]])


def test_training_jitter_stays_in_the_window():
    example = _rect_example()
    clip = ava.KeyframeClip(num_frames=2, rate=1, crop_size=96, max_boxes=2, num_classes=2,
                            scale_range=(1.0, 1.0), flip=False)
    plain = ava.KeyframeClip(num_frames=2, rate=1, crop_size=96, max_boxes=2, num_classes=2,
                             scale_range=(1.0, 1.0), flip=False, jitter=None)
    for seed in range(5):
        jittered = clip(example, np.random.default_rng(seed))
        exact = plain(example, np.random.default_rng(seed))  # the same view: jitter draws last
        assert jittered["box_mask"].tolist() == exact["box_mask"].tolist()
        m = exact["box_mask"][0]
        a, b = jittered["boxes"][0][m], exact["boxes"][0][m]
        size = np.tile(b[:, 2:] - b[:, :2], 2)
        assert np.all(np.abs(a - b) <= 0.2 * size + 1e-4)
        assert np.all(a >= 0) and np.all(a <= 96)
        assert not np.allclose(a, b)


def test_scale_below_one_is_refused():
    with pytest.raises(ValueError, match="scale_range"):
        ava.KeyframeClip(scale_range=(0.8, 1.0))


def test_labels_of_another_class_count_are_refused():
    example = _rect_example()
    with pytest.raises(ValueError, match="labels over 2 classes; .* num_classes=80"):
        ava.KeyframeClip()(example, np.random.default_rng(0))


# --- The demo dataset ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ava_dir(tmp_path_factory):
    """A data directory holding the small demo_ava dataset (6 train / 3 validation videos)."""
    path = str(tmp_path_factory.mktemp("demo_ava"))
    sa.files("small", path)
    return path


def _plan_of(video_id: str) -> sa.AVAPlan:
    seed, index = map(int, video_id.split("_")[2:])
    c = sa.AVA_CONFIGS["small"]
    return sa.sample_plan(np.random.default_rng([seed, index]), c["size"], c["fps"],
                          c["min_seconds"], c["max_seconds"])


def test_plans_keep_shapes_apart_and_inside():
    for index in range(80):
        plan = sa.sample_plan(np.random.default_rng([5, index]))
        assert 2 <= len(plan.tracks) <= 3 and 150 <= plan.num_frames <= 200
        assert len({t.colour for t in plan.tracks}) == len(plan.tracks)
        for track in plan.tracks:
            groups = [sum(c in g for c in track.labels)
                      for g in (sa.TRANSLATIONS, sa.ROTATIONS, sa.SIZE_CHANGES)]
            assert 1 <= len(track.labels) <= 2 and max(groups) == 1  # one class per group
            assert not (groups[1] and track.shape == "circle")
            centres, radii, angles = track.trajectory(plan.num_frames)
            assert radii.min() >= 0.05 * 112 - 1e-6 and radii.max() <= 0.15 * 112 + 1e-6
            assert np.all(centres - radii[:, None] >= 1.5 - 1e-6)
            assert np.all(centres + radii[:, None] <= 112 - 1.5 + 1e-6)
            for label, rate in zip(track.labels, track.rates):
                if label in sa.TRANSLATIONS:
                    assert rate >= 0.2
        for a in range(len(plan.tracks)):
            for b in range(a):
                assert sa._apart(plan.tracks[a], plan.tracks[b], plan.num_frames)
        assert plan.keyframes == list(range(1, (plan.num_frames - 1) // 25 + 1))


def _colour_box(image: np.ndarray, colour: str, within: float) -> np.ndarray:
    """[x1, y1, x2, y2] (pixel edges) of the pixels within `within` (RGB distance) of a colour."""
    distance = np.linalg.norm(image.astype(np.float32) - np.asarray(COLOURS[colour], np.float32),
                              axis=-1)
    ys, xs = np.nonzero(distance < within)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_demo_boxes_are_the_rendered_shapes_extent():
    c = sa.AVA_CONFIGS["small"]
    for index in range(3):
        rng = np.random.default_rng([3, index])  # as make_example draws
        plan = sa.sample_plan(rng, c["size"], c["fps"], c["min_seconds"], c["max_seconds"])
        frames = sa.render(plan, rng)
        for ts, *box, _, person in sa.annotation_rows(plan):
            found = _colour_box(frames[int(ts) * 25], plan.tracks[int(person)].colour, 10)
            np.testing.assert_allclose(found, np.asarray(box) * 112, atol=1e-4)


def test_demo_boxes_enclose_the_decoded_shapes(ava_dir):
    """The boxes of the files, on the frames decoded at their keyframes: the shape's pixels
    (within 60 of its colour) lie inside its box to within a pixel; the box is at most 3.5 pixels
    looser (H.264's chroma blurs a sharp vertex's last pixels away from the colour)."""
    paths = sa.files("small", ava_dir)
    truth = ava.read_boxes(paths["validation"])
    videos = sa.videos("validation", "small", ava_dir)
    differences = []
    for ex in videos:
        video_id = ex["video_id"].decode()
        plan = _plan_of(video_id)
        with decode.Video(ex["video"]) as video:
            assert video.fps == 25 and video.num_frames == plan.num_frames
            for ts in plan.keyframes:
                entry = truth[(video_id, ts)]
                frame_index = int(ava.keyframe_indices(video.times, ts, 1, 1)[0])
                assert frame_index == ts * 25
                image = decode.to_rgb(video.frames([frame_index])[0])
                for box, person in zip(entry["boxes"] * 112, entry["person_ids"]):
                    found = _colour_box(image, plan.tracks[person].colour, 60)
                    where = f"{video_id}@{ts} person {person}: {found} in {box}"
                    assert np.all(found[:2] >= box[:2] - 1.1) and \
                        np.all(found[2:] <= box[2:] + 1.1), where
                    assert np.all(found[:2] <= box[:2] + 3.5) and \
                        np.all(found[2:] >= box[2:] - 3.5), where
                    differences.extend(np.abs(found - box))
    assert len(differences) >= 4 * 3 * 5 * 2 and np.mean(differences) < 1.2


def test_demo_files(ava_dir):
    paths = sa.files("small", ava_dir)
    assert [c for c, _ in ava.read_label_map(paths["label_map"])] == list(range(1, 9))
    assert ava.read_exclusions(paths["train_exclusions"]) == set()
    truth = ava.read_boxes(paths["validation"])
    det = ava.read_boxes(paths["validation_detections"], detections=True)
    assert sorted(det) == sorted(truth)
    for key, entry in truth.items():
        d = det[key]
        kept = d["boxes"][d["scores"] >= 0.8]
        assert len(kept) == len(entry["boxes"])  # one detection per shape above 0.8
        for gt, found in zip(entry["boxes"], kept):
            size = np.tile(gt[2:] - gt[:2], 2)
            assert np.all(np.abs(found - gt) <= 0.04 * size + 0.0015)
    # False detections: at about a quarter of the keyframes, scored below 0.75.
    rows = np.array([[ts, 0.1, 0.1, 0.3, 0.4, 1, 0] for ts in range(1, 201)], np.float32)
    lines = sa.detection_lines("v", rows).splitlines()
    scores = np.array([float(line.split(",")[-1]) for line in lines])
    assert 30 < (scores < 0.75).sum() < 70 and (scores >= 0.85).sum() == 200
    # The files say what the records say, and the records are functions of (seed, index).
    c = sa.AVA_CONFIGS["small"]
    lines = "".join(sa.ground_truth_lines(f"ava_demo_3_{i:05d}", sa.make_example(
        3, i, c["size"], c["fps"], c["min_seconds"], c["max_seconds"])["ava_rows"])
        for i in range(c["num_validation"]))
    with open(paths["validation"]) as f:
        assert f.read() == lines


def test_demo_is_deterministic():
    a, b = sa.make_example(4, 2, min_seconds=6, max_seconds=6), \
        sa.make_example(4, 2, min_seconds=6, max_seconds=6)
    assert a["video"] == b["video"] and np.array_equal(a["ava_rows"], b["ava_rows"])
    assert a["video_id"] == "ava_demo_4_00002" and a["label"] == -1
    assert sa.make_example(4, 3, min_seconds=6, max_seconds=6)["video"] != a["video"]
    assert sa.detection_lines(a["video_id"], a["ava_rows"]) == \
        sa.detection_lines(b["video_id"], b["ava_rows"])
    # Rows: a shape with two actions has two rows with one box.
    rows = a["ava_rows"]
    assert rows.shape[1] == 7 and set(rows[:, 5].astype(int)) <= set(sa.ACTION_IDS)


def test_open_source_routes_demo_ava(ava_dir):
    train = sources.open_source("demo_ava/small", "train", ava_dir)
    assert isinstance(train, ava.KeyframeSource) and len(train) == 6 * 5
    ex = train[0]
    assert ex["labels"].shape == (len(ex["boxes"]), 8) and ex["labels"].sum(1).min() >= 1
    np.testing.assert_array_equal(ex["scores"], 1)
    val = sources.open_source("demo_ava/small", "validation", ava_dir)
    assert len(val) == 3 * 5
    assert all(0.8 <= s < 1 for i in range(len(val)) for s in val[i]["scores"])
    gt_val = sa.source("validation", "small", ava_dir, detections=False)
    assert len(gt_val) == 3 * 5 and gt_val[0]["labels"].sum() > 0
    with pytest.raises(ValueError, match="Unknown demo_ava dataset config 'big'"):
        sources.open_source("demo_ava/big", "train", ava_dir)
    with pytest.raises(ValueError, match="detections for 'validation' only"):
        sa.source("train", "small", ava_dir, detections=True)
    # A training clip of a demo keyframe, and the evaluation clip of a detected one.
    clip = ava.KeyframeClip(num_frames=8, rate=4, crop_size=96, max_boxes=4, num_classes=8)
    out = clip(ex, np.random.default_rng(0))
    assert out["video"].shape == (1, 8, 96, 96, 3) and out["box_mask"].sum() >= 1
    views = ava.KeyframeClip(num_frames=8, rate=4, crop_size=96, max_boxes=4, num_classes=8,
                             train=False, eval_max_side=110)
    out = views(val[0], 0)
    assert out["video"].shape == (1, 8, 112, 112, 3) and out["image_size"].tolist() == [[110, 110]]
