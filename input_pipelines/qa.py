"""One example per question, from a random-access source of videos with their questions.

A QA dataset stores each video once with all its questions (annotation format qa; the packed
`questions` feature; the demo's DemoQASource). QuestionSource flattens it: example i is question k
of video v, by a (video index, question index) table built once, reading each video's record once
(its questions; no video is decoded). Its video bytes are the video record's own, read when the
example is accessed, not copied per question.
"""
from __future__ import annotations

import numpy as np

from input_pipelines import robust

# 'candidates': a multiple-choice question's candidate answers, joined by newlines ('' for an
# open-ended one): one text field, so that a packed dataset stores it as the others.
QUESTION_FIELDS = ("question", "answer", "question_id", "type", "candidates")


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def questions_of(example: dict) -> list[dict]:
    """The questions of a video's example as a list of {question, answer, question_id, type,
    candidates} (str), from either form a source gives: a list of dicts (annotation records), or
    the column-wise dict of lists of bytes that a packed TFDS Sequence reads back as. No
    'questions': none. A dataset packed before candidates existed has none: ''."""
    questions = example.get("questions")
    if questions is None:
        return []
    if isinstance(questions, dict):  # column-wise: {'question': [...], 'answer': [...], ...}
        n = len(questions["question"])
        columns = [list(questions[name]) if name in questions else [""] * n
                   for name in QUESTION_FIELDS]
        return [{name: _text(v) for name, v in zip(QUESTION_FIELDS, row)} for row in zip(*columns)]
    return [{name: _text(q.get(name, "")) for name in QUESTION_FIELDS} for q in questions]


def candidates_of(question: dict) -> list[str]:
    """A question's candidate answers (questions_of's 'candidates' split), [] if open-ended."""
    text = question.get("candidates", "")
    return text.split("\n") if text else []


def _question_counts(video_source) -> list[int]:
    """Questions per video: from the annotation records where the source holds them (a file list:
    its files are not opened), else by reading each record once."""
    records = getattr(video_source, "records", None)
    if records is not None:
        return [len(r.get("questions", ())) for r in records]
    return [len(questions_of(video_source[v])) for v in range(len(video_source))]


class QuestionSource:
    """Random access to the questions of `video_source` (a TFDS source of a packed qa dataset, a
    FileListSource of format qa, a DemoQASource), in video order, then in each video's order.

    [i] -> the video's example plus question, answer, question_id, type (str) and
    question_index (int: the question's position among its video's). len = number of questions;
    videos without questions give no examples.
    """

    def __init__(self, video_source):
        self.videos = video_source
        counts = np.asarray(_question_counts(video_source), np.int64)
        videos = np.repeat(np.arange(len(counts)), counts)
        first = np.cumsum(counts) - counts  # example index of each video's first question
        # table[i] = (video index, question index) of example i.
        self.table = np.stack([videos, np.arange(len(videos)) - first[videos]], axis=1)

    def __len__(self) -> int:
        return len(self.table)

    def describe(self, index: int) -> str:
        """The video of example `index` (its file or id), for error reports."""
        return robust.source_name(self.videos, int(self.table[index, 0]))

    def __getitem__(self, index: int) -> dict:
        video, k = (int(x) for x in self.table[index])
        example = self.videos[video]
        question = questions_of(example)[k]
        return {**example, **question, "question_index": k}
