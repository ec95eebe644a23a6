"""Open-ended video question answering on the multimodal model (InternVideo's `vtc_cap` head).

Data: a QA dataset (annotation format qa, packed or listed; the demo's 'demo_qa'), one example
per question (input_pipelines/qa.QuestionSource). The answer vocabulary: the
model.answer_vocabulary most frequent answers of the training split (input_pipelines/answers.py),
built when the task is made, stored with the checkpoint (with its hash, in the protocol) and
checked on evaluation. Training questions whose answer is outside it are left out of the loss
(InternVideo's -100 labels); in evaluation they count as wrong (`top1`), and `top1_in_vocabulary`
gives InternVideo's own count that leaves them out.

Batch {'video': (B, T, S, S, 3) uint8, 'question': (B, 77) int32, 'answer': (B,) int32}.
Model (models/video_qa.py): the question through the text encoder and the caption decoder
conditioned on the video; the decoder's feature at the question's EOT token with the global video
and text features -> the vqa_classifier MLP -> (B, V) logits; cross-entropy. The head's lr is
model.head_lr_multiplier x the rest's. init_from: a multimodal pretraining run or an imported
InternVideo checkpoint (the encoders and the decoder load; what loaded is reported).
Evaluation: top-1 overall and per question type, predictions per question
(predictions_<split>.jsonl: question_id, video_id, question, answer, predicted, score), the
majority-answer baseline of the training split, the protocol with the result. Questions with
candidate answers (multiple-choice QA: TGIF-QA Action/Transition, the demo's) are also scored
as multiple choice, the candidate with the highest answer logit chosen (evaluation/qa.py
candidate_accuracy): mc_top1 overall and per type, 'chosen' in the predictions file.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from input_pipelines import answers, builders, label_map, normalization, qa
from internvideo_jax.evaluation import qa as qa_metrics
from internvideo_jax.evaluation.evaluate import eval_data_config, map_over_split, skipped_report
from internvideo_jax.models import multimodal, video_qa
from internvideo_jax.tasks.base import Task, normalized
from internvideo_jax.tasks.classification import copy_matching
from internvideo_jax.tree import flatten, unflatten

HEAD = "vqa_classifier"


class VideoQATask(Task):
    def __init__(self, config):
        m, d = config.model, config.data
        self.config, self.data = config, d
        self.size = multimodal.get_size(m.size)
        if d.crop_size != self.size.video.image_size:
            raise ValueError(f"model.size={m.size!r} takes {self.size.video.image_size}px "
                             f"frames: set data.crop_size={self.size.video.image_size}.")
        self.video_shape = (d.num_frames, d.crop_size, d.crop_size, 3)
        self.mean, self.std = (np.asarray(v, np.float32)
                               for v in normalization.get(d.normalization))
        self.context_length = self.size.text.context_length
        self.model = video_qa.VideoQAModel(self.size, len(self.vocabulary), jnp.dtype(m.dtype),
                                           m.drop_path_rate, m.remat, m.scan_layers,
                                           m.head_dropout, m.temporal_kernel)

    # ---- the answer vocabulary ----------------------------------------------------------------
    @functools.cached_property
    def training_questions(self) -> qa.QuestionSource:
        return qa.QuestionSource(builders.open_data_source(self.data))

    @functools.cached_property
    def training_answers(self) -> tuple[list[str], list[str]]:
        """(answers, types) of every training question, read without decoding a video."""
        out, kinds = [], []
        for video in range(len(self.training_questions.videos)):
            for q in qa.questions_of(self.training_questions.videos[video]):
                out.append(answers.normalize_answer(q["answer"]))
                kinds.append(q["type"])
        if not out:
            raise ValueError(f"{self.data.dataset}:{self.data.split} has no questions: video QA "
                             f"needs a QA dataset (annotation format 'qa', or 'demo_qa').")
        return out, kinds

    @functools.cached_property
    def vocabulary(self) -> list[str]:
        return answers.build_vocabulary(self.training_answers[0],
                                        self.config.model.answer_vocabulary)

    @functools.cached_property
    def answer_index(self) -> dict:
        return answers.vocabulary_index(self.vocabulary)

    # ---- model ------------------------------------------------------------------------------
    def init_batch(self, batch_size: int) -> dict:
        return {"video": np.zeros((batch_size,) + self.video_shape, np.uint8),
                "question": np.zeros((batch_size, self.context_length), np.int32),
                "answer": np.zeros((batch_size,), np.int32)}

    def normalize(self, video_uint8: jax.Array) -> jax.Array:
        return normalized(video_uint8, self.mean, self.std, self.model.dtype)

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, self.normalize(batch["video"]), batch["question"])

    def logits_fn(self, variables: dict, video: jax.Array, question: jax.Array) -> jax.Array:
        """(B, V, T, S, S, 3) uint8 views (V = 1), (B, L) ids -> (B, answers) float32."""
        return self.model.apply(variables, self.normalize(video[:, 0]), question)

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool):
        logits = self.model.apply({"params": params}, self.normalize(batch["video"]),
                                  batch["question"], deterministic=not train,
                                  rngs={"dropout": rng})  # (B, V)
        known = batch["answer"] >= 0  # answers outside the vocabulary: no loss
        ce = optax.softmax_cross_entropy_with_integer_labels(
            logits, jnp.maximum(batch["answer"], 0))  # (B,)
        count = jnp.maximum(known.sum(), 1)
        loss = jnp.sum(jnp.where(known, ce, 0.0)) / count
        right = (jnp.argmax(logits, -1) == batch["answer"]) & known
        return loss, {"loss": loss, "accuracy": right.sum() / count}

    def lr_scales(self, params):
        """model.head_lr_multiplier on the vqa_classifier, 1 elsewhere."""
        scale = float(self.config.model.head_lr_multiplier)
        return unflatten({p: (scale if p[0] == HEAD else 1.0) for p in flatten(params)})

    def load_pretrained(self, params: dict, pretrained: dict) -> tuple[dict, list, list]:
        """The encoders and the caption decoder of a multimodal pretraining run or an imported
        InternVideo checkpoint (the same paths); the QA head from a QA run of the same
        vocabulary size, else initialised. Too little loaded is an error naming what is
        missing."""
        target, loaded = copy_matching(flatten(params), flatten(pretrained), ())
        kept = sorted(set("/".join(p) for p in target) - set(loaded))
        body = [k for k in ("/".join(p) for p in target) if not k.startswith(HEAD)]
        missing = [k for k in body if k in set(kept)]
        if missing:
            raise ValueError(
                f"init_from fills {len(body) - len(missing)} of the QA model's {len(body)} "
                f"encoder/decoder tensors (missing e.g. {missing[:5]}): point it at a "
                f"multimodal pretraining run or an imported InternVideo checkpoint of "
                f"model.size={self.config.model.size!r}.")
        return unflatten(target), loaded, kept

    # ---- data -------------------------------------------------------------------------------
    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        d = self.data
        clip = builders.QAClip(d.num_frames, d.crop_size, self.answer_index,
                               self.config.augment.min_crop_area, self.context_length)
        return builders.train_stream(d, clip, seed=seed, local_batch=local_batch,
                                     process_index=process_index, process_count=process_count,
                                     start_step=start_step, source=self.training_questions)

    def protocol(self) -> dict:
        d = self.data
        return {"frames": d.num_frames, "sampler": "uniform", "crop_size": d.crop_size,
                "normalization": d.normalization, "split": self.config.eval.split,
                "vocabulary": {"answers": self.vocabulary,
                               "sha256": answers.fingerprint(self.vocabulary),
                               "source": f"{d.dataset}:{d.split}"}}

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, variables, mesh, config, out_dir: str | None = None,
                 stored_protocol: dict | None = None) -> dict:
        """Top-1 on config.eval.split, overall and per question type, next to the majority
        baseline; writes predictions_<split>.jsonl into out_dir."""
        vocab = {"names": self.vocabulary, "sha256": answers.fingerprint(self.vocabulary)}
        if stored_protocol is not None:
            stored = stored_protocol["vocabulary"]
            label_map.check_same({"names": stored["answers"], "sha256": stored["sha256"]},
                                 vocab, f"the answer vocabulary of {self.data.dataset}")
        source = qa.QuestionSource(builders.open_data_source(eval_data_config(config)))
        views = builders.QAViews(builders.EvalViews(self.data.num_frames, 1, self.data.crop_size,
                                                    1, 1, "uniform"),
                                 self.answer_index, self.context_length)
        got = map_over_split(self.logits_fn, variables, mesh, config, views,
                             inputs=("video", "question"), source=source)
        logits = got["outputs"]  # (N, V)
        questions = questions_by_index(source, got["index"])
        predicted = np.argmax(logits, -1)
        kinds = [q["type"] for q in questions]
        result = qa_metrics.accuracy(predicted, got["label"], kinds)
        majority = qa_metrics.majority_answers(*self.training_answers)
        guess = np.asarray([answers.encode(majority.get(k, majority[""]), self.answer_index)
                            for k in kinds])
        base = qa_metrics.accuracy(guess, got["label"], kinds)
        result["majority_top1"] = base["top1"]
        if "per_type" in result:
            for kind, row in result["per_type"].items():
                row["majority_top1"] = base["per_type"][kind]["top1"]
        result.update(skipped_report(got["skipped"]))
        mc = None
        if any(q["candidates"] for q in questions):  # multiple choice: the best candidate
            norm = answers.normalize_answer
            mc = qa_metrics.candidate_accuracy(
                logits, [[norm(c) for c in qa.candidates_of(q)] for q in questions],
                [norm(q["answer"]) for q in questions], self.answer_index, kinds)
            result.update({k: mc[k] for k in ("mc_top1", "mc_questions")})
            for kind, row in mc.get("per_type", {}).items():
                result["per_type"][kind].update(row)
        if out_dir and jax.process_index() == 0:
            probs = jax.nn.softmax(jnp.asarray(logits), -1)
            scores = np.asarray(jnp.max(probs, -1))
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, f"predictions_{config.eval.split}.jsonl"), "w",
                      encoding="utf-8") as f:
                for i, (q, p, score) in enumerate(zip(questions, predicted, scores)):
                    row = {"question_id": q["question_id"], "video_id": q["video_id"],
                           "question": q["question"], "answer": q["answer"],
                           "predicted": self.vocabulary[int(p)], "score": float(score)}
                    if mc is not None and q["candidates"]:  # the candidate it chose
                        row["chosen"] = mc["chosen"][i]
                    f.write(json.dumps(row) + "\n")
        flat = {f"top1_{kind}": row["top1"] for kind, row in result.get("per_type", {}).items()}
        flat.update({f"majority_top1_{kind}": row["majority_top1"]
                     for kind, row in result.get("per_type", {}).items()})
        flat.update({f"mc_top1_{kind}": row["mc_top1"]
                     for kind, row in result.get("per_type", {}).items() if "mc_top1" in row})
        return {**result, **flat}


def questions_by_index(source: qa.QuestionSource, indices: np.ndarray) -> list[dict]:
    """The questions (with their video_id) of example indices of `source`, reading each video's
    record once."""
    table = source.table[np.asarray(indices, np.int64)]  # (N, 2) video, question
    by_video = {}
    for v in sorted(set(int(v) for v in table[:, 0])):
        example = source.videos[v]
        vid = example.get("video_id", str(v))
        vid = vid.decode("utf-8") if isinstance(vid, bytes) else str(vid)
        by_video[v] = [dict(q, video_id=vid) for q in qa.questions_of(example)]
    return [by_video[int(v)][int(k)] for v, k in table]
