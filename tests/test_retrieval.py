"""Retrieval and zero-shot metrics against values worked out by hand."""
import numpy as np
import pytest

from internvideo_jax.evaluation import retrieval


def test_ranks_and_recalls_by_hand():
    # 3 texts x 3 videos, text i -> video i.
    sim = np.array([[0.9, 0.1, 0.2],    # t0: v0 first          -> rank 1
                    [0.8, 0.3, 0.5],    # t1: v1 after v0, v2   -> rank 3
                    [0.1, 0.7, 0.6]])   # t2: v2 after v1       -> rank 2
    m = retrieval.retrieval_metrics(sim, np.arange(3))
    assert m["t2v_R@1"] == pytest.approx(100 / 3)
    assert m["t2v_R@5"] == 100.0
    assert m["t2v_MdR"] == 2.0 and m["t2v_MnR"] == pytest.approx(2.0)
    # video -> text, columns: v0 [0.9, 0.8, 0.1] t0 first (1); v1 [0.1, 0.3, 0.7] t1 second (2);
    # v2 [0.2, 0.5, 0.6] t2 first (1).
    assert m["v2t_R@1"] == pytest.approx(200 / 3)
    assert m["v2t_MnR"] == pytest.approx(4 / 3) and m["v2t_MdR"] == 1.0


def test_several_captions_per_video_take_the_best_rank():
    # 4 texts, 2 videos; texts 0, 1 -> v0, texts 2, 3 -> v1.
    sim = np.array([[0.2, 0.9],   # t0 -> v0 ranked 2nd
                    [0.8, 0.1],   # t1 -> v0 1st
                    [0.5, 0.4],   # t2 -> v1 2nd
                    [0.3, 0.6]])  # t3 -> v1 1st
    m = retrieval.retrieval_metrics(sim, np.array([0, 0, 1, 1]))
    assert m["t2v_R@1"] == 50.0 and m["t2v_MnR"] == 1.5
    # v0 column [0.2, 0.8, 0.5, 0.3]: its texts t0 (rank 4), t1 (rank 1) -> 1.
    # v1 column [0.9, 0.1, 0.4, 0.6]: its texts t2 (rank 3), t3 (rank 2) -> 2.
    assert m["v2t_R@1"] == 50.0 and m["v2t_MnR"] == 1.5


def test_ties_count_against_the_query():
    m = retrieval.retrieval_metrics(np.zeros((4, 4)), np.arange(4))
    assert m["t2v_R@1"] == 0.0 and m["t2v_MdR"] == 4.0


def test_dual_softmax_by_hand():
    sim = np.array([[2.0, 0.0],
                    [0.0, 1.0]])
    # column 0: softmax([2, 0]) = [e^2, 1] / (e^2 + 1); column 1: softmax([0, 1]).
    e = np.e
    expected = np.array([[2 * e**2 / (e**2 + 1), 0.0],
                         [0.0, 1 * e / (1 + e)]])
    np.testing.assert_allclose(retrieval.dual_softmax(sim), expected, rtol=1e-12)
    # DSL changes the ranking: here t1 prefers v1 only after re-weighting.
    sim = np.array([[5.0, 4.9],
                    [4.0, 3.0]])
    m = retrieval.retrieval_metrics(sim, np.arange(2))
    assert m["t2v_R@1"] == 50.0  # t0 -> v0 first; t1 -> v1 second (4.0 > 3.0)
    # columns: v0 softmax([5, 4]) = [.731, .269] -> [3.66, 1.08]; v1 softmax([4.9, 3]) =
    # [.870, .130] -> [4.26, 0.39]. t0: v1 (4.26) beats v0 (3.66): rank 2. t1: v0 (1.08) beats
    # v1 (0.39): rank 2.
    assert m["dsl_t2v_R@1"] == 0.0


def test_zero_shot_accuracy_and_prompt_ensembling():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        # a fake text encoder: features from the last word
        table = {"cat": [1.0, 0.0], "dog": [0.0, 1.0]}
        return np.array([table[t.split()[-1]] for t in texts]) * np.arange(1, len(texts) + 1)[:, None]

    feats = retrieval.class_text_features(encode, ["cat", "dog"], ["a {}", "a photo of a {}"])
    assert calls == [["a cat", "a photo of a cat"], ["a dog", "a photo of a dog"]]
    np.testing.assert_allclose(feats, [[1, 0], [0, 1]])  # normalised before averaging
    videos = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    acc = retrieval.zero_shot_accuracy(videos, feats, np.array([0, 1, 1]))
    assert acc["zero_shot_top1"] == pytest.approx(200 / 3)
    # predictions 0, 1, 0 for labels 0, 1, 1: class 0 one of one right, class 1 one of two
    assert acc["zero_shot_per_class_top1"] == {0: 100.0, 1: 50.0}


def test_labels_from_captions_whole_words_exactly_one():
    captions = [["a small red triangle"], ["A RED square", "it is red"], ["a redder circle"],
                ["red and blue"], ["a blue thing"]]
    labels, keep = retrieval.labels_from_captions(captions, ["red", "blue"])
    np.testing.assert_array_equal(keep, [True, True, False, False, True])
    np.testing.assert_array_equal(labels[keep], [0, 0, 1])
