"""Questions about the embedded demo dataset's videos, generated from their captions.

A demo caption is "a {size} {colour} {shape} {verb}" (synthetic_videos.SceneSpec.caption), so each
video gets three questions whose answers its caption states:
  colour     "what colour is the shape?"          -> a colour of synthetic_videos.COLOURS
  shape      "what shape is it?"                  -> a shape of synthetic_videos.SHAPES
and the motion question of its class:
  direction  "which way does it move?"            -> left | right | up | down (moving classes)
  rotation   "which way does it turn?"            -> clockwise | counterclockwise (rotating)
  size       "is it getting bigger or smaller?"   -> bigger | smaller (growing, shrinking)
The colour and shape show in any single frame; the motion question needs the frames in order.

DemoQASource gives the demo videos as qa-format records' examples (annotations.example with
`questions`; question_id '<video_id>#<k>'), for qa.QuestionSource.
"""
from __future__ import annotations

import dataclasses

from input_pipelines import annotations, synthetic_videos

SIZE_WORDS = ("small", "large")  # SceneSpec.size_word
# Caption verb -> class name: ZERO_SHOT_CLASSNAMES names each class as its captions say it.
_CLASS_OF_VERB = dict(zip(synthetic_videos.ZERO_SHOT_CLASSNAMES, synthetic_videos.CLASSES))


@dataclasses.dataclass(frozen=True)
class CaptionWords:
    """What a demo caption says: size word, colour, shape, class name (synthetic_videos.CLASSES)."""

    size: str
    colour: str
    shape: str
    motion: str


def parse_caption(caption: str) -> CaptionWords:
    """Read a demo caption ("a small red triangle moves to the left") by SceneSpec.caption's
    grammar; ValueError naming the part that does not fit."""
    words = caption.split()
    article, size, colour, shape = (words + [""] * 4)[:4]
    verb = " ".join(words[4:])
    checks = ((article == "a", "it does not start with 'a'"),
              (size in SIZE_WORDS, f"size {size!r} is not one of {SIZE_WORDS}"),
              (colour in synthetic_videos.COLOURS, f"unknown colour {colour!r}"),
              (shape in synthetic_videos.SHAPES, f"unknown shape {shape!r}"),
              (verb in _CLASS_OF_VERB, f"unknown motion {verb!r}"))
    problems = [problem for ok, problem in checks if not ok]
    if problems:
        raise ValueError(f"{caption!r} is not a demo caption ('a {{small|large}} {{colour}} "
                         f"{{shape}} {{motion}}'): {'; '.join(problems)}")
    return CaptionWords(size, colour, shape, _CLASS_OF_VERB[verb])


def motion_question(motion: str) -> tuple[str, str, str]:
    """(question, answer, type) of a class name of synthetic_videos.CLASSES."""
    kind, _, way = motion.partition(" ")
    if kind == "moving":
        return "which way does it move?", way, "direction"
    if kind == "rotating":
        return "which way does it turn?", way, "rotation"
    if motion in ("growing", "shrinking"):
        return "is it getting bigger or smaller?", \
            "bigger" if motion == "growing" else "smaller", "size"
    raise ValueError(f"no motion question for class {motion!r}; the classes are "
                     f"{synthetic_videos.CLASSES}")


# Each question type's possible answers, in a fixed order: a question's candidates (multiple
# choice with the fine-tuned QA model) are all the answers of its type.
ANSWERS_OF_TYPE = {
    "colour": tuple(synthetic_videos.COLOURS), "shape": tuple(synthetic_videos.SHAPES),
    "direction": ("left", "right", "up", "down"), "rotation": ("clockwise", "counterclockwise"),
    "size": ("bigger", "smaller")}


def questions(caption: str, video_id: str) -> list[dict]:
    """The video's questions, [{question, answer, question_id, type, candidates}] (annotations'
    qa schema; candidates: ANSWERS_OF_TYPE of the question's type, newline-joined)."""
    words = parse_caption(caption)
    asked = [("what colour is the shape?", words.colour, "colour"),
             ("what shape is it?", words.shape, "shape"),
             motion_question(words.motion)]
    return [{"question": q, "answer": a, "question_id": f"{video_id}#{k}", "type": t,
             "candidates": "\n".join(ANSWERS_OF_TYPE[t])}
            for k, (q, a, t) in enumerate(asked)]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class DemoQASource:
    """The demo dataset's split (sources.demo_source, built on first use) with each video's
    questions: [i] -> annotations.example of the qa record {path: the video id (the demo has no
    files), label, captions: [caption], video_id, questions}, num_frames and fps as stored."""

    def __init__(self, split: str, config: str = "default", data_dir: str | None = None):
        from input_pipelines import sources  # sources routes 'demo_qa' here: imported on use
        self.videos = sources.demo_source(split, config, data_dir)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        ex = self.videos[index]
        caption, video_id = _text(ex["caption"]), _text(ex["video_id"])
        record = {"path": video_id, "label": int(ex["label"]), "captions": [caption],
                  "video_id": video_id, "questions": questions(caption, video_id)}
        return annotations.example(record, ex["video"], video_id, int(ex["num_frames"]),
                                   float(ex["fps"]))
