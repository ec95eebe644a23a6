"""Video-text retrieval and zero-shot classification metrics (NumPy, on the host).

Similarity matrices are (num_texts, num_videos); text i describes video `text_to_video[i]` (a video
may have several captions). Ranks are 1-based; ties count against the query (a correct item tied
with others is ranked after them), so a constant similarity never scores.

- text-to-video: for each text, the rank of its video among all videos.
- video-to-text: for each video, the best rank among its captions over all texts.
- R@K = % of queries with rank <= K; MdR / MnR = median / mean rank.
- Dual softmax (DSL): sim * softmax(sim, axis=0), i.e. each video's column renormalised over the
  texts, applied before ranking (the inference-time re-weighting of CAMoE/InternVideo).
"""
from __future__ import annotations

import numpy as np


def ranks_of(sim: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(Q, N) scores, (Q, N) bool correct items -> (Q,) best 1-based rank of a correct item.

    The rank of item j for query q is the number of items scoring >= sim[q, j] (itself included),
    so ties are counted against the query.
    """
    ranks = np.empty(sim.shape[0], np.int64)
    for q in range(sim.shape[0]):
        scores = sim[q, correct[q]]  # (c,) the correct items' scores
        if not scores.size:
            raise ValueError(f"query {q} has no correct item")
        ranks[q] = (sim[q][None, :] >= scores[:, None]).sum(axis=1).min()
    return ranks


def rank_metrics(ranks: np.ndarray, prefix: str) -> dict:
    return {f"{prefix}_R@1": 100.0 * float(np.mean(ranks <= 1)),
            f"{prefix}_R@5": 100.0 * float(np.mean(ranks <= 5)),
            f"{prefix}_R@10": 100.0 * float(np.mean(ranks <= 10)),
            f"{prefix}_MdR": float(np.median(ranks)),
            f"{prefix}_MnR": float(np.mean(ranks))}


def dual_softmax(sim: np.ndarray) -> np.ndarray:
    """sim * softmax(sim, axis=0) for a (texts, videos) matrix."""
    z = sim - sim.max(axis=0, keepdims=True)
    p = np.exp(z)
    return sim * p / p.sum(axis=0, keepdims=True)


def retrieval_metrics(sim: np.ndarray, text_to_video: np.ndarray) -> dict:
    """t2v and v2t R@1/5/10, MdR, MnR, raw and with DSL.

    Args:
      sim: (num_texts, num_videos) similarities (e.g. cosine x logit scale).
      text_to_video: (num_texts,) index of each text's video.
    """
    sim = np.asarray(sim, np.float64)
    num_texts, num_videos = sim.shape
    text_to_video = np.asarray(text_to_video)
    correct = np.zeros((num_texts, num_videos), bool)
    correct[np.arange(num_texts), text_to_video] = True
    out = {}
    for tag, s in (("", sim), ("dsl_", dual_softmax(sim))):
        out.update(rank_metrics(ranks_of(s, correct), f"{tag}t2v"))
        out.update(rank_metrics(ranks_of(s.T, correct.T), f"{tag}v2t"))
    return out


def zero_shot_accuracy(video_features: np.ndarray, class_features: np.ndarray,
                       labels: np.ndarray) -> dict:
    """Top-1 / top-5 (%) of argmax cosine similarity between videos and class text features,
    and zero_shot_per_class_top1: {class index: top-1 (%)} over the classes that have videos."""
    v = video_features / np.linalg.norm(video_features, axis=1, keepdims=True)
    c = class_features / np.linalg.norm(class_features, axis=1, keepdims=True)
    order = np.argsort(-(v @ c.T), axis=1)
    k = min(5, c.shape[0])
    right = order[:, 0] == labels  # (N,)
    return {"zero_shot_top1": 100.0 * float(np.mean(right)),
            f"zero_shot_top{k}": 100.0 * float(np.mean((order[:, :k] == labels[:, None]).any(1))),
            "zero_shot_per_class_top1": {int(i): 100.0 * float(right[labels == i].mean())
                                         for i in np.unique(labels)}}


def class_text_features(encode, classnames: list[str], templates: list[str]) -> np.ndarray:
    """Prompt ensembling: per class, the mean of the L2-normalised features of every template
    filled with the class name, renormalised. encode(list of texts) -> (N, E) features."""
    out = []
    for name in classnames:
        f = np.asarray(encode([t.format(name) for t in templates]), np.float64)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        mean = f.mean(axis=0)
        out.append(mean / np.linalg.norm(mean))
    return np.stack(out)


def labels_from_captions(captions: list[list[str]], classnames: list[str]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per video, the index of the one class name that appears (as whole words, any case) in
    its captions; (labels (N,), keep (N,) bool: False where none or several appear)."""
    import re
    patterns = [re.compile(r"\b" + re.escape(n.lower()) + r"\b") for n in classnames]
    labels = np.zeros(len(captions), np.int64)
    keep = np.zeros(len(captions), bool)
    for i, texts in enumerate(captions):
        text = " ".join(texts).lower()
        hits = [k for k, p in enumerate(patterns) if p.search(text)]
        if len(hits) == 1:
            labels[i], keep[i] = hits[0], True
    return labels, keep
