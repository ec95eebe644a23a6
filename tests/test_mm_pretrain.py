"""Multimodal pretraining end to end on the small demo data: train, evaluate, extract, refuse."""
import json
import os

import numpy as np
import pytest

from input_pipelines import builders, synthetic_videos
from internvideo_jax import offline
from internvideo_jax.tasks import get_task
from internvideo_jax.training import train
from internvideo_jax.training.metrics_writer import read_metrics
from internvideo_jax.text.tokenizer import get_tokenizer
from tests.helpers import apply_overrides


def _mm_config(data_dir, **overrides):
    from experiments.mm_pretrain import get_config
    c = get_config("tiny")
    c.data.update(dataset="demo/small", data_dir=data_dir)
    c.eval.update(batch_size=8)
    c.update(batch_size=8, total_steps=3, log_every=1, checkpoint_every=3)
    return apply_overrides(c, overrides)


def test_caption_clip_draws_among_captions_and_tokenizes():
    ex = synthetic_videos.make_example(0, 1, size=64, num_frames=16)
    ex["caption"] = "a red square moves up\nA RED SQUARE GOES UP!"
    clip = builders.CaptionClip(num_frames=4, crop_size=32)
    seen = set()
    for seed in range(20):
        out = clip(ex, np.random.default_rng(seed))
        assert out["video"].shape == (1, 4, 32, 32, 3) and out["video"].dtype == np.uint8
        assert out["text"].shape == (1, 77) and out["text"].dtype == np.int32
        seen.add(tuple(out["text"][0]))
    tok = get_tokenizer()
    assert seen == {tuple(tok("a red square moves up")[0]), tuple(tok("A RED SQUARE GOES UP!")[0])}


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A 3-step tiny multimodal run on the small demo data (its workdir)."""
    workdir = str(tmp_path_factory.mktemp("mm"))
    train.train(_mm_config(data_dir), workdir, progress=False)
    return workdir


def test_train_evaluate_and_extract(data_dir, trained):
    workdir = trained
    records = read_metrics(workdir)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses))
    final = records[-1]
    assert final["eval_videos"] == 8 and final["eval_texts"] == 8  # one caption per video
    for key in ("t2v_R@1", "v2t_R@5", "dsl_t2v_R@10", "zero_shot_top1"):
        assert 0.0 <= final[f"eval_{key}"] <= 100.0
    assert 1.0 <= final["eval_t2v_MdR"] <= 8.0

    # Evaluation alone from the checkpoint reproduces the end-of-training numbers.
    again = offline.evaluate(_mm_config(data_dir), workdir)
    for key in ("t2v_R@1", "t2v_MnR", "v2t_MnR", "dsl_v2t_MnR", "zero_shot_top1"):
        assert again[key] == pytest.approx(final[f"eval_{key}"], abs=1e-9), key
    with open(os.path.join(workdir, "eval_validation.json")) as f:
        assert json.load(f)["t2v_MnR"] == again["t2v_MnR"]

    path = offline.extract_features(_mm_config(data_dir), workdir)
    got = np.load(path)
    assert got["features"].shape == (8, 64) and len(set(got["video_id"])) == 8
    np.testing.assert_allclose(np.linalg.norm(got["features"], axis=1), 1.0, rtol=1e-5)
    files = sorted(os.listdir(os.path.join(workdir, "features", "validation")))
    assert len(files) == 8
    first = np.load(os.path.join(workdir, "features", "validation",
                                 offline._file_name(str(got["video_id"][0])) + ".npy"))
    np.testing.assert_array_equal(first, got["features"][0])


def test_checkpoint_of_another_model_is_refused_with_the_names(data_dir, trained):
    no_decoder = _mm_config(data_dir, **{"model.caption_weight": 0.0})
    with pytest.raises(ValueError, match=r"unexpected \['params/decoder/"):
        offline.evaluate(no_decoder, trained)


def test_uncaptioned_dataset_fails_at_start(tmp_path):
    listing = tmp_path / "list.txt"
    video = tmp_path / "v.mp4"
    video.write_bytes(synthetic_videos.make_example(0, 0, size=64, num_frames=16)["video"])
    listing.write_text(f"{video} 0\n")
    c = _mm_config("", **{"data.dataset": f"list:{listing}"})
    with pytest.raises(ValueError, match="has no captions"):
        train.train(c, str(tmp_path / "w"), progress=False)


def test_zero_shot_runs_only_with_class_names_and_never_reports_nan():
    from experiments.mm_pretrain import get_config
    from internvideo_jax.tasks.mm_pretrain import zero_shot_metrics
    assert get_config("tiny").eval.zero_shot_classnames == tuple(synthetic_videos.COLOURS)
    for preset in ("b16", "l14"):  # a user's dataset: no class names unless given
        assert get_config(preset).eval.zero_shot_classnames == ()
        assert get_config(preset).eval.zero_shot_templates == ()

    def encode(texts):  # one axis per colour word: 'red' -> e0, 'blue' -> e1
        return np.array([[float("red" in t), float("blue" in t), 0.0, 0.1] for t in texts])

    videos = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    captions = [["a red cat"], ["a blue dog"], ["a cat on a sofa"]]
    e = get_config("b16").eval
    assert zero_shot_metrics(encode, e, videos, np.array([-1, -1, -1]), captions) == {}
    e = apply_overrides(e, {"zero_shot_classnames": ("red", "blue"),
                            "zero_shot_templates": ("a {} thing",)})
    assert zero_shot_metrics(encode, e, videos, np.array([-1, -1, -1]), captions) == {
        "zero_shot_top1": 100.0, "zero_shot_top2": 100.0, "zero_shot_videos": 2,
        "zero_shot_per_class_top1": {"red": 100.0, "blue": 100.0}}
    with pytest.raises(ValueError, match=r"no video's captions name exactly one of "
                                         r"eval.zero_shot_classnames \('red', 'blue'\).*\(\)"):
        zero_shot_metrics(encode, e, videos, np.array([0, 1, 0]), [["a cat"]] * 3)
    e.zero_shot_labels = "label"
    with pytest.raises(ValueError, match=r"no video has a label"):
        zero_shot_metrics(encode, e, videos, np.array([-1, -1, -1]), captions)
    # video 2 ([0, 0, 1, 0]) is as far from both classes: the tie goes to the first, red
    assert zero_shot_metrics(encode, e, videos, np.array([0, -1, 1]), captions) == {
        "zero_shot_top1": 50.0, "zero_shot_top2": 100.0, "zero_shot_videos": 2,
        "zero_shot_per_class_top1": {"red": 100.0, "blue": 0.0}}


def test_evaluation_without_class_names_has_no_zero_shot_and_unknown_classes_fail(
        data_dir, trained):
    result = offline.evaluate(_mm_config(data_dir, **{"eval.zero_shot_classnames": ()}), trained)
    assert result["t2v_R@1"] >= 0.0 and not any(k.startswith("zero_shot") for k in result)
    assert all(np.isfinite(v) for v in result.values() if isinstance(v, (int, float)))
    with pytest.raises(ValueError, match="no video's true class is known"):  # was a NaN top-1
        offline.evaluate(_mm_config(data_dir, **{"eval.zero_shot_classnames": ("purple",)}),
                         trained)


def _captioned_files(tmp_path, first_kind: str):
    """A captions JSON whose first file is missing or unreadable, then two good videos."""
    for i in (1, 2):
        (tmp_path / f"v{i}.mp4").write_bytes(
            synthetic_videos.make_example(i, 0, size=64, num_frames=16)["video"])
    if first_kind == "unreadable":  # a directory: open() fails even as root
        (tmp_path / "v0.mp4").mkdir()
    caps = [{"video": f"v{i}.mp4", "caption": f"video number {i}"} for i in range(3)]
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    return f"captions:{tmp_path / 'caps.json'}"


@pytest.mark.parametrize("first_kind", ["missing", "unreadable"])
def test_start_up_does_not_need_the_first_video(tmp_path, first_kind):
    from internvideo_jax.tasks.mm_pretrain import MultimodalPretrainTask, first_readable_captions
    dataset = _captioned_files(tmp_path, first_kind)
    source = builders.open_data_source(_mm_config("", **{"data.dataset": dataset}).data)
    assert first_readable_captions(source, dataset) == (str(tmp_path / "v1.mp4"),
                                                        ["video number 1"])
    task = MultimodalPretrainTask(_mm_config("", **{"data.dataset": dataset}))
    _, epoch_size = task.train_dataset(seed=0, local_batch=2, process_index=0, process_count=1)
    assert epoch_size == 3


def test_start_up_names_the_unreadable_videos(tmp_path):
    (tmp_path / "caps.json").write_text(json.dumps(
        [{"video": f"nope_{i}.mp4", "caption": "x"} for i in range(25)]))
    c = _mm_config("", **{"data.dataset": f"captions:{tmp_path / 'caps.json'}"})
    from internvideo_jax.tasks.mm_pretrain import MultimodalPretrainTask
    with pytest.raises(ValueError, match=r"none of its first 20 videos could be read: "
                                         r".*nope_0.mp4 \(FileNotFoundError.*nope_19.mp4"):
        MultimodalPretrainTask(c).train_dataset(seed=0, local_batch=2, process_index=0,
                                                process_count=1)


def test_motion_negatives_change_only_the_motion():
    caption = "a small red triangle moves to the left"
    negatives = synthetic_videos.motion_negatives(caption, 3, np.random.default_rng(0))
    assert len(negatives) == len(set(negatives)) == 3
    verbs = set(synthetic_videos.ZERO_SHOT_CLASSNAMES) - {"moves to the left"}
    for text in negatives:
        assert text.startswith("a small red triangle ") and text[21:] in verbs
    every = synthetic_videos.motion_negatives(caption, 7, np.random.default_rng(1))
    assert sorted(t[21:] for t in every) == sorted(verbs)
    with pytest.raises(ValueError, match="ends in none of the demo's motions"):
        synthetic_videos.motion_negatives("a cat sits", 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="8 motion negatives asked for"):
        synthetic_videos.motion_negatives(caption, 8, np.random.default_rng(0))


def test_caption_clip_gives_hard_negatives_of_its_caption():
    ex = synthetic_videos.make_example(0, 1, size=64, num_frames=16)
    clip = builders.CaptionClip(num_frames=4, crop_size=32, negative_captions="demo_motion",
                                num_negatives=2)
    out = clip(ex, np.random.default_rng(5))
    assert out["negatives"].shape == (1, 2, 77) and out["negatives"].dtype == np.int32
    want = synthetic_videos.motion_negatives(ex["caption"], 2, _rng_after_crop(ex, 5))
    np.testing.assert_array_equal(out["negatives"][0], get_tokenizer()(want))


def _rng_after_crop(example, seed):
    """The clip's generator after its sampling, crop and caption draws (one caption)."""
    rng = np.random.default_rng(seed)
    builders.segment_crop(example, rng, 4, 32, 0.5)
    rng.integers(1)
    return rng


def test_hard_negatives_need_a_way_to_make_them(data_dir):
    with pytest.raises(ValueError, match="needs data.negative_captions.*demo_motion"):
        get_task(_mm_config(data_dir, **{"model.hard_negatives": 2,
                                         "data.negative_captions": ""}))


def test_a_run_with_hard_negatives_trains(data_dir, tmp_path):
    c = _mm_config(data_dir, **{"model.hard_negatives": 2,
                                "data.negative_captions": "demo_motion", "total_steps": 2})
    task = get_task(c)
    assert task.init_batch(4)["negatives"].shape == (4, 2, 77)
    from internvideo_jax.infra import flops
    base = flops.multimodal_flops(task.size, 8, c.model.caption_length,
                                  temporal_kernel=c.model.temporal_kernel)
    assert task.flops_per_example() == base + 2 * flops.text_encoder_flops(task.size.text)
    state = train.train(c, str(tmp_path / "hn"), progress=False)
    assert int(state.step) == 2
