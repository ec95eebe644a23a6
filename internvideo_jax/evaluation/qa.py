"""Video question answering and multiple choice metrics, NumPy on the host.

Open-ended QA is classification over an answer vocabulary (input_pipelines/answers.py): a
question whose true answer is outside the vocabulary is in the count and always wrong (as
InternVideo and the QA benchmarks score it). Accuracy is reported overall and per question type.
Multiple choice (MSR-VTT MC): each video has C candidate sentences and the index of the right one;
the candidate with the highest score wins (ties: the first of them, numpy.argmax).
"""
from __future__ import annotations

from collections import Counter

import numpy as np


def accuracy(predicted: np.ndarray, answers: np.ndarray, types: list[str]) -> dict:
    """predicted (N,) vocabulary indices, answers (N,) the true answers' indices (-1: out of the
    vocabulary, counted wrong), types (N,) question types ('' when the dataset has none) ->
    {'top1', 'questions', 'out_of_vocabulary', 'per_type': {type: {'top1', 'questions'}}}."""
    predicted, answers = np.asarray(predicted), np.asarray(answers)
    if predicted.shape != answers.shape or len(types) != len(answers):
        raise ValueError(f"{predicted.shape} predictions, {answers.shape} answers and "
                         f"{len(types)} types: one of each per question.")
    right = (predicted == answers) & (answers >= 0)  # (N,)
    known = answers >= 0
    out = {"top1": float(right.mean()) if len(right) else 0.0, "questions": int(len(right)),
           "out_of_vocabulary": int((~known).sum()),
           "top1_in_vocabulary": float(right[known].mean()) if known.any() else 0.0}
    kinds = np.asarray(types)
    per_type = {t: {"top1": float(right[kinds == t].mean()), "questions": int((kinds == t).sum())}
                for t in sorted(set(types)) if t}
    if per_type:
        out["per_type"] = per_type
    return out


def majority_answers(train_answers: list[str], train_types: list[str]) -> dict:
    """{type: the most frequent training answer of that type} and '' -> the most frequent of
    all: the majority-answer baseline's predictions (ties: the answer seen first)."""
    out = {"": Counter(train_answers).most_common(1)[0][0]}
    by_type: dict[str, list[str]] = {}
    for answer, kind in zip(train_answers, train_types):
        by_type.setdefault(kind, []).append(answer)
    out.update({k: Counter(v).most_common(1)[0][0] for k, v in by_type.items() if k})
    return out


def multiple_choice_accuracy(scores: np.ndarray, answer_index: np.ndarray) -> dict:
    """scores (N, C) of each video's candidates, answer_index (N,) the right one ->
    {'accuracy', 'videos', 'chosen': (N,) list}."""
    scores, answer_index = np.asarray(scores), np.asarray(answer_index)
    if scores.ndim != 2 or answer_index.shape != (len(scores),):
        raise ValueError(f"scores {scores.shape} must be (videos, candidates) and answer_index "
                         f"{answer_index.shape} (videos,).")
    chosen = np.argmax(scores, axis=1)  # (N,)
    return {"accuracy": float(np.mean(chosen == answer_index)) if len(chosen) else 0.0,
            "videos": int(len(chosen)), "chosen": chosen.tolist()}


def candidate_accuracy(logits: np.ndarray, candidates: list[list[str]], answers: list[str],
                       index: dict, types: list[str]) -> dict:
    """Multiple-choice QA with an open-ended QA model: each question's candidate answers scored
    by the model's logit of that answer, the best one chosen (ties: the first); a candidate
    outside the vocabulary scores -inf (never chosen while one inside is), and a question none
    of whose candidates is in the vocabulary counts wrong. Questions without candidates are left
    out.

    Args:
      logits: (N, V) the QA model's answer logits.
      candidates: N lists of candidate answers (normalised as the vocabulary; [] = open-ended).
      answers: N true answers (one of the candidates where there are candidates).
      index: answer -> vocabulary index (answers.vocabulary_index).
      types: N question types.
    Returns:
      {'mc_top1', 'mc_questions', 'chosen': N chosen candidates ('' where none),
       'per_type': {type: {'mc_top1', 'mc_questions'}}} (per_type where there are types).
    """
    logits = np.asarray(logits)
    if not len(candidates) == len(answers) == len(types) == len(logits):
        raise ValueError(f"{len(logits)} logits, {len(candidates)} candidate lists, "
                         f"{len(answers)} answers and {len(types)} types: one of each per "
                         f"question.")
    chosen, right, kinds = [], [], []
    for row, cands, answer, kind in zip(logits, candidates, answers, types):
        if not cands:
            chosen.append("")
            continue
        scores = [row[index[c]] if c in index else -np.inf for c in cands]
        best = int(np.argmax(scores))
        pick = cands[best] if np.isfinite(scores[best]) else ""
        chosen.append(pick)
        right.append(pick == answer and pick != "")
        kinds.append(kind)
    right = np.asarray(right, bool)
    out = {"mc_top1": float(right.mean()) if len(right) else 0.0,
           "mc_questions": int(len(right)), "chosen": chosen}
    kinds = np.asarray(kinds)
    per_type = {t: {"mc_top1": float(right[kinds == t].mean()),
                    "mc_questions": int((kinds == t).sum())}
                for t in sorted(set(kinds.tolist())) if t}
    if per_type:
        out["per_type"] = per_type
    return out
