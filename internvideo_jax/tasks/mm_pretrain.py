"""Multimodal video-text pretraining: contrastive (global-batch negatives) + caption loss.

Batch: {'video': (B, T, S, S, 3) uint8, 'text': (B, 77) int32 CLIP ids of one of the video's
captions}. Loss = model.contrastive_weight * InfoNCE + model.caption_weight * caption CE, the
caption decoder reading the first model.caption_length ids (77: all; shorter saves compute when
captions are short, captions cut there lose their end-of-text target).
Evaluation (end of training, or `--mode=evaluate`): text-to-video / video-to-text retrieval on
config.eval.split (every caption of every video; raw and dual softmax) and, when
eval.zero_shot_classnames is set (the config's default is none: only the demo preset sets them),
zero-shot classification from eval.zero_shot_classnames x eval.zero_shot_templates (prompt
ensembling), the true class being the dataset's label (eval.zero_shot_labels='label', in class-name
order; unlabelled videos, label -1, are left out) or the one class name that the video's caption
contains ('caption'; videos naming none or several are left out). zero_shot_videos counts the
videos kept; none kept is an error, not a NaN accuracy. Without class names zero-shot is skipped
(one logged line) and the result has no zero_shot_* key.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from input_pipelines import builders, decode, normalization, robust, sources
from internvideo_jax.evaluation import pictures
from internvideo_jax.evaluation import qa as qa_metrics
from internvideo_jax.evaluation import retrieval
from internvideo_jax.evaluation.evaluate import eval_data_config, map_over_split, skipped_report
from internvideo_jax.infra.flops import multimodal_flops
from internvideo_jax.models import multimodal
from internvideo_jax.tasks.base import Task, normalized
from internvideo_jax.text.tokenizer import get_tokenizer
from internvideo_jax.training import losses


class MultimodalPretrainTask(Task):
    def __init__(self, config):
        m, d = config.model, config.data
        self.size = multimodal.get_size(m.size)
        if d.crop_size != self.size.video.image_size:
            raise ValueError(f"model.size={m.size!r} takes {self.size.video.image_size}px "
                             f"frames: set data.crop_size={self.size.video.image_size}.")
        if m.contrastive_weight <= 0 and m.caption_weight <= 0:
            raise ValueError("model.contrastive_weight and model.caption_weight are both 0: "
                             "nothing to train.")
        if m.hard_negatives and d.negative_captions not in builders.NEGATIVE_CAPTIONS:
            raise ValueError(f"model.hard_negatives={m.hard_negatives} needs "
                             f"data.negative_captions, how they are made: one of "
                             f"{sorted(builders.NEGATIVE_CAPTIONS)} (got "
                             f"{d.negative_captions!r}).")
        self.config, self.data = config, d
        self.video_shape = (d.num_frames, d.crop_size, d.crop_size, 3)
        mean_std = normalization.get(d.normalization)
        self.mean, self.std = (np.asarray(v, np.float32) for v in mean_std)
        self.context_length = self.size.text.context_length
        self.model = multimodal.VideoTextModel(
            self.size, caption=m.caption_weight > 0, drop_path_rate=m.drop_path_rate,
            dtype=jnp.dtype(m.dtype), remat=m.remat,
            scan=m.scan_layers, temporal_kernel=m.temporal_kernel)

    def flops_per_example(self) -> float:
        """Forward FLOPs of one (video, caption) pair, the decoder included when it is trained
        and the hard-negative captions' text encoding (internvideo_jax/infra/flops.py)."""
        m = self.config.model
        return multimodal_flops(self.size, self.video_shape[0],
                                m.caption_length if m.caption_weight > 0 else None,
                                m.hard_negatives, m.temporal_kernel)

    def init_batch(self, batch_size: int) -> dict:
        batch = {"video": np.zeros((batch_size,) + self.video_shape, np.uint8),
                 "text": np.zeros((batch_size, self.context_length), np.int32)}
        k = self.config.model.hard_negatives
        if k:  # (B, K, L): each video's hard-negative captions
            batch["negatives"] = np.zeros((batch_size, k, self.context_length), np.int32)
        return batch

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, self.normalize(batch["video"]), batch["text"])

    def normalize(self, video_uint8: jax.Array) -> jax.Array:
        return normalized(video_uint8, self.mean, self.std, self.model.dtype)

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool):
        m = self.config.model
        out = self.model.apply({"params": params}, self.normalize(batch["video"]), batch["text"],
                               deterministic=not train, rngs={"dropout": rng},
                               caption_length=m.caption_length)
        negatives = None
        if "negatives" in batch:  # (B, K, L) -> (B, K, E): the same text encoder
            b, k, length = batch["negatives"].shape
            negatives = self.model.apply({"params": params},
                                         batch["negatives"].reshape(b * k, length),
                                         method="encode_text").reshape(b, k, -1)
        contrastive, logits = losses.contrastive_loss(out["video"], out["text"],
                                                      out["logit_scale"], negatives)
        loss = m.contrastive_weight * contrastive
        metrics = {"contrastive": contrastive,
                   "temperature": 1.0 / jnp.exp(jnp.clip(out["logit_scale"], 0, jnp.log(100.0))),
                   # in-batch video->text top-1 over the global batch
                   "batch_v2t_top1": jnp.mean(jnp.argmax(logits, 1) == jnp.arange(len(logits)))}
        if "caption_logits" in out:
            caption = losses.caption_loss(out["caption_logits"],
                                          batch["text"][:, :m.caption_length])
            loss = loss + m.caption_weight * caption
            metrics["caption"] = caption
        return loss, {"loss": loss, **metrics}

    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        d = self.data
        where, captions = first_readable_captions(builders.open_data_source(d),
                                                  f"{d.dataset}:{d.split}")
        if not captions:
            raise ValueError(f"{d.dataset}:{d.split} has no captions (its first readable video, "
                             f"{where}, has none): multimodal pretraining needs a captioned "
                             f"dataset.")
        clip = builders.CaptionClip(d.num_frames, d.crop_size, self.config.augment.min_crop_area,
                                    self.context_length, d.negative_captions,
                                    self.config.model.hard_negatives)
        return builders.train_stream(d, clip, seed=seed, local_batch=local_batch,
                                     process_index=process_index, process_count=process_count,
                                     start_step=start_step)

    # ---- evaluation -------------------------------------------------------------------------
    def eval_views(self) -> builders.EvalViews:
        d = self.data
        return builders.EvalViews(d.num_frames, 1, d.crop_size, 1, 1, "uniform")

    def video_features(self, variables, video: jax.Array) -> jax.Array:
        """(B, V, T, S, S, 3) uint8 -> (B, E) L2-normalised, mean over views, renormalised."""
        b, v = video.shape[:2]
        f = self.model.apply(variables, self.normalize(
            video.reshape((b * v,) + video.shape[2:])), method="encode_video")
        f = multimodal.clip.l2_normalize(f).reshape(b, v, -1).mean(axis=1)
        return multimodal.clip.l2_normalize(f)

    def clip_features(self, variables, video: jax.Array) -> dict:
        """(B, T, S, S, 3) uint8 -> {'features': (B, E) the video embedding, before the
        L2 normalisation of retrieval}, float32."""
        f = self.model.apply(variables, self.normalize(video), method="encode_video")
        return {"features": f.astype(jnp.float32)}

    def text_features(self, params, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, E) L2-normalised features of texts (computed replicated on every process), in
        fixed-size padded batches so that one compilation serves every call."""
        if not hasattr(self, "_encode_text"):
            self._encode_text = jax.jit(lambda p, ids: multimodal.clip.l2_normalize(
                self.model.apply({"params": p}, ids, method="encode_text")))
        ids = get_tokenizer(self.context_length)(texts)  # (N, L)
        out = []
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            padded = np.zeros((batch_size, ids.shape[1]), np.int32)
            padded[:len(chunk)] = chunk
            out.append(np.asarray(self._encode_text(params, padded))[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, self.size.text.embed_dim))

    def evaluate(self, variables, mesh, config, out_dir: str | None = None,
                 stored_protocol: dict | None = None) -> dict:
        """Retrieval and zero-shot metrics of variables['params']; with out_dir, the top-5
        videos of the first text queries as out_dir/retrieval_t2v.png and the zero-shot
        per-class top-1 as out_dir/zero_shot_per_class.png (stored_protocol: unused)."""
        del stored_protocol
        params = variables["params"]
        e = config.eval
        got = map_over_split(self.video_features, variables, mesh, config, self.eval_views())
        videos = got["outputs"]  # (N, E), order of got['index']
        source = builders.open_data_source(eval_data_config(config))
        captions = [builders.captions_of(source[int(index)]) for index in got["index"]]
        texts = [c for caps in captions for c in caps]
        text_to_video = [row for row, caps in enumerate(captions) for _ in caps]
        result = {"videos": len(videos), "texts": len(texts), **skipped_report(got["skipped"])}
        scale = float(np.exp(np.clip(np.asarray(params["logit_scale"]), 0, np.log(100.0))))
        if texts:
            sim = scale * self.text_features(params, texts) @ videos.T  # (texts, videos)
            result.update(retrieval.retrieval_metrics(sim, np.asarray(text_to_video)))
            if out_dir and jax.process_index() == 0:
                os.makedirs(out_dir, exist_ok=True)
                retrieval_sheet(source, got["index"], texts, text_to_video, sim,
                                os.path.join(out_dir, "retrieval_t2v.png"))
        result.update(zero_shot_metrics(lambda t: self.text_features(params, t), e, videos,
                                        got["label"], captions))
        if e.multiple_choice:
            result.update(self.multiple_choice(variables, mesh, config, videos, captions))
        per_class = result.get("zero_shot_per_class_top1")  # absent without class names
        if out_dir and per_class and jax.process_index() == 0:
            os.makedirs(out_dir, exist_ok=True)
            pictures.bar_chart(list(per_class), [v / 100 for v in per_class.values()],
                               os.path.join(out_dir, "zero_shot_per_class.png"),
                               f"zero-shot top-1 per class ({config.eval.split})")
        return result

    def multiple_choice(self, variables, mesh, config, videos: np.ndarray,
                        captions: list[list[str]]) -> dict:
        """Zero-shot multiple choice by video-text similarity (eval.multiple_choice): 'captions'
        builds it from the evaluated videos (each video's first caption among 4 other videos'
        captions, placed at random with a fixed seed; videos, captions: what retrieval
        computed), a dataset of format mc (e.g. 'mc:MSR_MC_test.csv', with data.video_root) is
        read as it is. -> {'mc_accuracy' (%), 'mc_videos'}."""
        spec = config.eval.multiple_choice
        if spec == "captions":
            candidates, answer = caption_choices(captions)
        else:
            data = eval_data_config(config)
            source = sources.open_source(spec, config.eval.split, data.data_dir or None,
                                         video_root=data.video_root or None)
            got = map_over_split(self.video_features, variables, mesh, config,
                                 self.eval_views(), source=source)
            videos = got["outputs"]
            records = [source[int(i)] for i in got["index"]]
            candidates = [builders.captions_of(r) for r in records]
            answer = np.asarray([int(r["answer_index"]) for r in records])
        if not len(candidates):
            raise ValueError(f"eval.multiple_choice={spec!r} gives no videos to score.")
        sizes = {len(c) for c in candidates}
        if len(sizes) != 1:
            raise ValueError(f"eval.multiple_choice={spec!r}: videos have {sorted(sizes)} "
                             f"candidates; every video needs the same number.")
        texts = self.text_features(variables["params"], [t for c in candidates for t in c])
        scores = np.einsum("ne,nce->nc", videos, texts.reshape(len(candidates), -1,
                                                               texts.shape[-1]))  # (N, C)
        mc = qa_metrics.multiple_choice_accuracy(scores, answer)
        return {"mc_accuracy": 100 * mc["accuracy"], "mc_videos": mc["videos"]}


def retrieval_sheet(source, indices: np.ndarray, texts: list[str], text_to_video: list[int],
                    sim: np.ndarray, path: str, queries: int = 4, top: int = 5) -> None:
    """The contact sheet of text-to-video retrieval: for the first `queries` texts, the middle
    frames of their `top` best videos, the right one framed (evaluation/pictures.py)."""
    rows, marks = [], []
    for t in range(min(queries, len(texts))):
        best = np.argsort(-sim[t])[:top]  # (top,) rows of indices
        frames = []
        for v in best:
            with decode.Video(source[int(indices[v])]["video"]) as video:
                frames.append(decode.to_rgb(video.frames([video.num_frames // 2])[0]))
        rows.append(frames)
        marks.append([int(v) == text_to_video[t] for v in best])
    pictures.contact_sheet(texts[:len(rows)], rows, marks, path)


def caption_choices(captions: list[list[str]], num_candidates: int = 5,
                    seed: int = 0) -> tuple[list[list[str]], np.ndarray]:
    """Multiple choice from captioned videos: for video i, its first caption and
    num_candidates - 1 captions of other videos that none of video i's captions equals, in a
    random order (numpy seed `seed`). -> (candidates per video, index of the right one (N,))."""
    rng = np.random.default_rng(seed)
    pool = sorted({c[0] for c in captions if c})
    out, answer = [], []
    for caps in captions:
        others = [t for t in pool if t not in set(caps)]
        if not caps or len(others) < num_candidates - 1:
            raise ValueError(f"multiple choice from captions needs every video captioned and "
                             f"{num_candidates - 1} other distinct captions; a video has "
                             f"{len(caps)} caption(s) and {len(others)} others to draw from.")
        picked = [others[int(i)] for i in rng.choice(len(others), num_candidates - 1,
                                                     replace=False)]
        right = int(rng.integers(num_candidates))
        out.append(picked[:right] + [caps[0]] + picked[right:])
        answer.append(right)
    return out, np.asarray(answer)


def first_readable_captions(source, name: str, max_tries: int = 20) -> tuple[str, list[str]]:
    """(the record's name, its captions) of the first record of `source` that can be read, so
    that no check depends on record 0: records raising robust.LOAD_ERRORS (a missing or unreadable
    file) are passed over, up to max_tries of them; then a ValueError naming them."""
    failed = []
    for index in range(min(max_tries, len(source))):
        describe = getattr(source, "describe", None)  # names a file even if unreadable
        where = describe(index) if describe else f"#{index}"
        try:
            example = source[index]
        except robust.LOAD_ERRORS as e:
            failed.append(f"{where} ({type(e).__name__}: {e})")
            continue
        where = robust.example_id(example, index)
        return where, builders.captions_of(example) if "caption" in example else []
    if not failed:
        raise ValueError(f"{name} has no videos.")
    raise ValueError(f"{name}: none of its first {len(failed)} videos could be read: "
                     f"{'; '.join(failed)}. Run `python -m input_pipelines.build validate` on the "
                     f"dataset.")


def zero_shot_metrics(encode, e, videos: np.ndarray, labels: np.ndarray,
                      captions: list[list[str]]) -> dict:
    """Zero-shot top-1/top-5 (%) and zero_shot_videos of `videos` ((N, E) features; labels (N,)
    the dataset's, -1 unlabelled; captions per video) with the class names and templates of
    config.eval `e`; encode(texts) -> (M, E) text features. {} (and one logged line) when
    e.zero_shot_classnames is empty; a ValueError when no video's class can be told."""
    names = list(e.zero_shot_classnames)
    if not names:
        logging.warning("Zero-shot classification skipped: eval.zero_shot_classnames is empty "
                        "(set it, and eval.zero_shot_templates, to the eval split's classes).")
        return {}
    if e.zero_shot_labels == "label":
        labels = np.asarray(labels)
        keep = labels >= 0
        how = "no video has a label (all -1)"
    elif e.zero_shot_labels == "caption":
        labels, keep = retrieval.labels_from_captions(captions, names)
        how = (f"no video's captions name exactly one of eval.zero_shot_classnames "
               f"{tuple(names)}")
    else:
        raise ValueError(f"eval.zero_shot_labels={e.zero_shot_labels!r}: choose 'label' "
                         f"(the dataset's labels) or 'caption' (the class name that the "
                         f"video's caption contains).")
    if not keep.any():
        raise ValueError(
            f"Zero-shot classification on eval.split={e.split!r} with "
            f"eval.zero_shot_labels={e.zero_shot_labels!r}: {how}, so no video's true class is "
            f"known. Set eval.zero_shot_classnames (and eval.zero_shot_templates) to this "
            f"dataset's classes, or to () to skip zero-shot (--config.eval.zero_shot_classnames=()"
            f"; --mode=evaluate reruns the evaluation from the last checkpoint).")
    if not e.zero_shot_templates:
        raise ValueError("eval.zero_shot_classnames is set but eval.zero_shot_templates is "
                         "empty: give prompts such as ('a video of a {}.',).")
    classes = retrieval.class_text_features(encode, names, list(e.zero_shot_templates))
    result = retrieval.zero_shot_accuracy(videos[keep], classes, labels[keep])
    result["zero_shot_per_class_top1"] = {names[i]: acc for i, acc in
                                          result["zero_shot_per_class_top1"].items()}
    result["zero_shot_videos"] = int(keep.sum())
    return result
