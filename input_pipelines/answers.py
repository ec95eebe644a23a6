"""The answer vocabulary of open-ended video QA: answering is classification over the most frequent
training answers.

InternVideo (InternVideo1/Downstream/multi-modalities-downstream, from All-in-one) classifies over
the 1,500 most frequent training answers of MSRVTT-QA, the 1,000 of MSVD-QA and 1,540 of TGIF-QA
FrameQA (built from train + val there), plus one extra output that no answer maps to. A question
whose answer is outside the vocabulary cannot be answered right: it counts as wrong in evaluation
(the usual protocol; InternVideo's released accuracy leaves such questions out of the count, and
its training loss ignores them: label -100).

Answers are compared after `normalize_answer` (stripped, lower-cased, inner whitespace collapsed),
the one normalisation used to build the vocabulary, to encode training answers and to score
predictions. The vocabulary's SHA-256 is its identity (as a label map's: label_map.fingerprint):
a classifier head means nothing with another vocabulary or order.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from input_pipelines import label_map


def normalize_answer(answer: str) -> str:
    """'  Two  Dogs ' -> 'two dogs': stripped, lower-cased, runs of whitespace made one space."""
    return " ".join(answer.split()).lower()


def build_vocabulary(answers: Iterable[str], size: int) -> list[str]:
    """The `size` most frequent normalised answers (fewer when there are fewer distinct ones),
    most frequent first; equal counts in the answers' text order, so the result depends on the
    multiset of answers only. Empty answers (unanswered questions) are not counted."""
    if size <= 0:
        raise ValueError(f"the answer vocabulary size must be positive, got {size}")
    counts = Counter(a for a in map(normalize_answer, answers) if a)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [answer for answer, _ in ranked[:size]]


def fingerprint(vocab: list[str]) -> str:
    """SHA-256 (hex) of the ordered vocabulary (label_map.fingerprint: the same hash as a label
    map with these names)."""
    return label_map.fingerprint(vocab)


def vocabulary_index(vocab: list[str]) -> dict[str, int]:
    """{answer: class index} of a vocabulary (its answers are already normalised)."""
    return {answer: i for i, answer in enumerate(vocab)}


def encode(answer: str, index: dict[str, int]) -> int:
    """The class index of an answer (normalised first), or -1 when it is out of the vocabulary."""
    return index.get(normalize_answer(answer), -1)
