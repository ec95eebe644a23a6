"""Score-level ensemble against hand-computed averages."""
import json

import numpy as np
import pytest

from internvideo_jax import ensemble

NAMES = np.asarray(["a", "b", "c"])


def _write(path, ids, labels, scores, names=NAMES):
    np.savez(path, video_id=np.asarray(ids), label=np.asarray(labels),
             scores=np.asarray(scores, np.float32), view_probs=np.zeros((len(ids), 1, 3)),
             class_names=names, protocol=json.dumps({}))
    return str(path)


def test_ensemble_averages_scores_matched_by_video_id(tmp_path):
    # Model A: right on v0 and v1; model B (files in another order): right on v1 and v2.
    a = _write(tmp_path / "a.npz", ["v0", "v1", "v2"], [0, 1, 2],
               [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4]])
    b = _write(tmp_path / "b.npz", ["v2", "v0", "v1"], [2, 0, 1],
               [[0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.1, 0.8, 0.1]])
    result = ensemble.main([a, b, "--out", str(tmp_path / "e.json")])
    # By hand: v0 (0.45, 0.35, 0.2) -> 0 (right);
    # v1 (0.15, 0.65, 0.2) -> 1 (right); v2 (0.3, 0.15, 0.55) -> 2 (right).
    assert result["ensemble"]["top1"] == 1.0
    assert result["models"][a]["top1"] == 2 / 3 and result["models"][b]["top1"] == 2 / 3
    scores, info = ensemble.ensemble([ensemble.load_scores(a), ensemble.load_scores(b)])
    np.testing.assert_allclose(scores, [[0.45, 0.35, 0.2], [0.15, 0.65, 0.2], [0.3, 0.15, 0.55]],
                               rtol=1e-6)
    weighted, _ = ensemble.ensemble([ensemble.load_scores(a), ensemble.load_scores(b)], [3, 1])
    np.testing.assert_allclose(weighted[0], [0.75 * 0.6 + 0.25 * 0.3, 0.75 * 0.3 + 0.25 * 0.4,
                                             0.75 * 0.1 + 0.25 * 0.3], rtol=1e-6)
    assert json.load(open(tmp_path / "e.json"))["ensemble"]["videos"] == 3


def test_mismatched_files_are_refused(tmp_path):
    a = _write(tmp_path / "a.npz", ["v0", "v1"], [0, 1], np.eye(3)[:2])
    other_videos = _write(tmp_path / "b.npz", ["v0", "v9"], [0, 1], np.eye(3)[:2])
    other_names = _write(tmp_path / "c.npz", ["v0", "v1"], [0, 1], np.eye(3)[:2],
                         np.asarray(["a", "c", "b"]))
    other_labels = _write(tmp_path / "d.npz", ["v0", "v1"], [0, 2], np.eye(3)[:2])
    with pytest.raises(ValueError, match=r"different videos: missing \['v1'\], extra \['v9'\]"):
        ensemble.main([a, other_videos])
    with pytest.raises(ValueError, match="another label map"):
        ensemble.main([a, other_names])
    with pytest.raises(ValueError, match="disagree on labels"):
        ensemble.main([a, other_labels])
    with pytest.raises(ValueError, match="at least two"):
        ensemble.main([a])
