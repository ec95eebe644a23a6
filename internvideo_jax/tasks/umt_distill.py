"""Unmasked-teacher distillation (UMT; InternVideo2 stage 1): models/umt.py has the model and
the reference's rules.

config.model:
  size         the student, a VideoMAE size (models/videomae.py; its decoder is not built)
  mask_type    attention (the reference: tokens drawn in proportion to the mask teacher's
               class-token attention) | attention_topk (its top tokens) | tube (the input
               pipeline's random tube mask)
  mask_ratio   per frame int(HW * ratio) tokens masked (0.8: the student sees 20%)
  mask_teacher index of the teacher whose attention guides the mask (a CLIP teacher)
  frame_step   the student sees every frame_step-th frame of the clip (InternVideo2's td_ratio)
  teachers     a tuple of specs, one per teacher:
     source         a workdir or params checkpoint (convert import): a multimodal run
                    (mm_pretrain: the video tower's CLIP backbone, visual_ln_post and
                    visual_proj), a UniFormerV2 fine-tuning run (its CLIP backbone, no
                    projection; global UniBlocks unused; local UniBlocks are refused), or a
                    VideoMAE encoder (pretraining or fine-tuning run, or an import)
     layers         k: its last k layers are regressed by the student's last k
     weight         its loss's weight in the sum
     dtype          compute dtype ('' = model.dtype; 'bfloat16' halves its cost)
     normalization  '' = the teacher run's data.normalization (else the student's)
     resolution     frames are resized (bicubic, torch's) to this before the teacher; 0 = the
                    CLIP teacher's image size (the VideoMAE teacher's: the crop); a CLIP
                    teacher's positions are resized to it on loading (UMT-L: L/14 at 196)
     temporal_stride  a UniFormerV2 teacher's conv1 stride where its run does not say (0)
     size           with build(config, random_teachers=True) and no source: a randomly
                    initialised teacher of this size ('B/16', 'L/14', 'videomae:g'), for
                    benchmarks
The teachers are read at construction (shapes only) and loaded before step 0 (`initial_params`);
they are frozen: stop_gradient in the step, trainable_mask False (no update, no optimizer state),
their parameters sharded by the same logical rules as the student's.
`build(config)` is the task from a config, for benchmarks.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from input_pipelines import builders, normalization
from internvideo_jax.models import architecture, naming, pos_embed, umt, videomae
from internvideo_jax.tasks.base import Task, standardize, to_unit_range
from internvideo_jax.training import checkpointing
from internvideo_jax.tree import flatten, unflatten

MASK_TYPES = ("attention", "attention_topk", "tube")
# a teacher spec's keys and defaults (config.model.teachers holds plain dicts: JSON-able, and
# `--config.model.teachers[0].source=...` overrides one key)
TEACHER_DEFAULTS = dict(source="", layers=6, weight=1.0, dtype="", normalization="",
                        resolution=0, temporal_stride=0, size="")


def teacher_spec(**values) -> dict:
    """One teacher spec: TEACHER_DEFAULTS updated with `values` (an unknown key fails)."""
    unknown = sorted(set(values) - set(TEACHER_DEFAULTS))
    if unknown:
        raise ValueError(f"teacher spec keys {unknown} are unknown; the keys: "
                         f"{sorted(TEACHER_DEFAULTS)}.")
    return {**TEACHER_DEFAULTS, **values}


class _Spec:
    def __init__(self, values: dict):
        self.__dict__.update(teacher_spec(**dict(values)))


# ---- what a teacher checkpoint holds (shapes only) ---------------------------------------------
def _resolve(path: str) -> tuple[str, dict]:
    """(the checkpoint's state directory, the run's config.json or {})."""
    return checkpointing.resolve_state(path)


def stored_shapes(path: str) -> tuple[dict, dict]:
    """({param path tuple: shape} of the parameters at `path` (per-layer layout: a scanned
    stack's leading axis dropped, its layers named blocks_i / resblocks_i), the run's config)."""
    import orbax.checkpoint as ocp
    if not os.path.exists(path):
        raise FileNotFoundError(f"teacher source {path} does not exist: point the teacher's "
                                f"`source` at a workdir or an imported params checkpoint.")
    state, meta = _resolve(path)
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.metadata(state)
    tree = getattr(tree, "item_metadata", tree)
    tree = getattr(tree, "tree", tree)
    if "params" in tree:
        tree = tree["params"]
    shapes = {}
    for p, v in flatten(dict(tree)).items():
        p, shape = tuple(str(x) for x in p), tuple(v.shape)
        if naming.is_stacked_path(p):
            stack = naming.stacked_stack(p)
            at = p.index(stack)
            for i in range(shape[0]):
                shapes[p[:at] + (naming.layer_name(stack, i),) + p[at + 2:]] = shape[1:]
        else:
            shapes[p] = shape
    return shapes, meta


def _count(shapes: dict, prefix: tuple, stack: str) -> int:
    n = len(prefix)
    return len({p[n] for p in shapes if p[:n] == prefix and len(p) > n
                and naming.is_layer_name(p[n], stack)})


def describe_teacher(spec, shapes: dict, meta: dict):
    """(kind 'clip' | 'videomae', size, {module path: source path prefix}) from the shapes."""
    if ("visual", "encoder", "conv1") in shapes:
        kind, prefix, proj = "clip", ("visual", "encoder"), ("visual", "visual_proj")
    elif ("backbone", "conv1") in shapes:
        kind, prefix, proj = "clip", ("backbone",), None
    elif ("conv1",) in shapes:
        kind, prefix, proj = "clip", (), ("proj",) if ("proj",) in shapes else None
    elif ("encoder", "patch_embed", "kernel") in shapes or ("patch_embed", "kernel") in shapes:
        kind = "videomae"
        prefix = ("encoder",) if ("encoder", "patch_embed", "kernel") in shapes else ()
        proj = None
    else:
        raise ValueError(f"teacher {spec.source}: neither a CLIP / UniFormerV2 backbone (conv1) "
                         f"nor a VideoMAE encoder (patch_embed) in its parameters.")
    n = len(prefix)
    if kind == "clip":
        if any("lmhra1" in p for p in shapes if p[:n] == prefix):
            raise ValueError(f"teacher {spec.source} has local UniBlocks (BatchNorm state): "
                             f"not supported as a UMT teacher; use a multimodal run or a "
                             f"UniFormerV2 without local UniBlocks.")
        kt, p, _, _, width = shapes[prefix + ("conv1",)]
        g = int(round((shapes[prefix + ("positional_embedding",)][0] - 1) ** 0.5))
        layers = _count(shapes, prefix, naming.RESBLOCKS)
        heads = shapes[prefix + ("resblocks_0", "attn", "in_proj_kernel")][2]
        run = meta.get("config", {}).get("model", {})
        # the multimodal tower's conv1 has stride 1 whatever its kernel (mm_pretrain)
        stride = int(spec.temporal_stride or run.get("temporal_stride", 0) or
                     (1 if kt == 1 or prefix == ("visual", "encoder") else 0))
        if not stride:
            raise ValueError(f"teacher {spec.source}: conv1 has a temporal kernel of {kt} and "
                             f"its run does not give the stride: set the teacher's "
                             f"temporal_stride.")
        size = umt.ClipTeacherSize(int(width), layers, int(heads), int(p), int(g * p), int(kt),
                                   stride, int(shapes[proj][1]) if proj else 0)
        # where our ln_post / proj come from: the multimodal tower's visual_ln_post / visual_proj
        paths = ({"ln_post": proj[:-1] + ("visual_ln_post",) if len(proj) > 1 else ("ln_post",),
                  "proj": proj} if proj else {})
        return kind, size, prefix, paths
    pt, p, _, _, dim = shapes[prefix + ("patch_embed", "kernel")]
    tp = prefix + ("transformer",)
    depth = _count(shapes, tp, naming.BLOCKS)
    heads = shapes[tp + ("blocks_0", "attn", "qkv", "kernel")][2]
    mlp = shapes[tp + ("blocks_0", "mlp", "fc1", "kernel")][1]
    size = videomae.VideoMAESize(int(dim), depth, int(heads), 0, 0, 0, mlp / dim, int(p), int(pt))
    return kind, size, prefix, {"final_norm": prefix + ("norm", "scale") in shapes}


def named_teacher(name: str):
    """(kind, size) of a teacher built from a named size, with random weights (benchmarks):
    a UniFormerV2 size ('B/16', 'L/14': its CLIP backbone and projection) or
    'videomae:<size>' (models/videomae.py)."""
    if name.startswith("videomae:"):
        return "videomae", videomae.get_size(name.split(":", 1)[1])
    from internvideo_jax.models import uniformerv2
    u = uniformerv2.get_size(name)
    return "clip", umt.ClipTeacherSize(u.width, u.layers, u.heads, u.patch, u.image_size,
                                       proj_dim=u.embed_dim)


class UMTDistillTask(Task):
    def __init__(self, config, random_teachers: bool = False):
        """random_teachers: teachers given by `size` without a `source` keep their random
        initialisation (for benchmarks: the step's cost does not depend on the weights)."""
        m, d = config.model, config.data
        self.config, self.data = config, d
        self.size = architecture.configured_size(config, "umt_student", umt.get_student_size,
                                                 videomae.VideoMAESize)
        self.video_shape = (d.num_frames, d.crop_size, d.crop_size, 3)
        if m.mask_type not in MASK_TYPES:
            raise ValueError(f"model.mask_type={m.mask_type!r}; choose one of {MASK_TYPES}.")
        if not 0.0 < m.mask_ratio < 1.0:
            raise ValueError(f"model.mask_ratio must be in (0, 1), got {m.mask_ratio}.")
        if m.frame_step < 1 or d.num_frames % m.frame_step:
            raise ValueError(f"data.num_frames={d.num_frames} is not divisible by "
                             f"model.frame_step={m.frame_step}.")
        student_frames = d.num_frames // m.frame_step
        self.grid = videomae.token_grid((1, student_frames) + self.video_shape[1:], self.size)
        hw = self.grid[1] * self.grid[2]
        self.keep = umt.num_visible(hw, m.mask_ratio)
        if self.keep in (0, hw):
            raise ValueError(f"model.mask_ratio={m.mask_ratio} keeps {self.keep} of {hw} "
                             f"tokens per frame: choose a ratio that masks some and keeps some.")
        self.mean, self.std = (np.asarray(v, np.float32)
                               for v in normalization.get(d.normalization))
        if not m.teachers:
            raise ValueError("model.teachers is empty: give at least one teacher spec.")
        self.specs, arch, self.teacher_inputs = [], [], []
        for i, spec in enumerate(m.teachers):
            spec = _Spec(spec)
            if spec.source:
                shapes, meta = stored_shapes(spec.source)
                kind, size, prefix, extra = describe_teacher(spec, shapes, meta)
            elif spec.size and random_teachers:
                (kind, size), prefix, extra, meta = named_teacher(spec.size), (), {}, {}
            else:
                raise ValueError(f"model.teachers[{i}].source is not set: a multimodal, "
                                 f"UniFormerV2 or VideoMAE workdir or imported checkpoint.")
            if kind == "clip":
                if spec.resolution and spec.resolution != size.image_size:
                    if spec.resolution % size.patch:
                        raise ValueError(f"model.teachers[{i}].resolution={spec.resolution} "
                                         f"is not a multiple of its patch {size.patch}.")
                    # the reference: positions resized (bicubic) when the checkpoint is loaded
                    size = dataclasses.replace(size, image_size=int(spec.resolution))
                per_token, res, out_dim = size.frames_per_token, size.image_size, size.out_dim
                grid = (size.grid, size.grid)
            else:
                per_token, res, out_dim = size.tubelet, spec.resolution or d.crop_size, size.dim
                grid = (res // size.patch, res // size.patch)
            ratio = m.frame_step * self.size.tubelet
            if ratio % per_token:
                raise ValueError(f"teacher {i} covers {per_token} frames per token, the student "
                                 f"{ratio}: the student's must be a multiple (model.frame_step).")
            if grid != self.grid[1:]:
                raise ValueError(f"teacher {i} has a {grid} token grid per frame at {res}px, "
                                 f"the student {self.grid[1:]}: set the teacher's resolution "
                                 f"(or the crop size) so that they agree.")
            norm = spec.normalization or meta.get("config", {}).get("data", {}).get(
                "normalization", d.normalization)
            mean, std = (np.asarray(v, np.float32) for v in normalization.get(norm))
            dtype = jnp.dtype(spec.dtype or m.dtype)
            final_norm = extra.get("final_norm", False) if kind == "videomae" else False
            umt.returned_layers(size.layers if kind == "clip" else size.depth, spec.layers)
            umt.returned_layers(self.size.depth, spec.layers)
            arch.append((kind, size, int(spec.layers), int(out_dim), dtype, final_norm))
            self.teacher_inputs.append((ratio // per_token, res, mean, std, dtype))
            self.specs.append(dict(kind=kind, prefix=prefix, extra=extra, source=spec.source,
                                   weight=float(spec.weight)))
        if not 0 <= m.mask_teacher < len(arch):
            raise ValueError(f"model.mask_teacher={m.mask_teacher}: there are {len(arch)} "
                             f"teachers.")
        if m.mask_type != "tube" and arch[m.mask_teacher][0] != "clip":
            raise ValueError(f"model.mask_type={m.mask_type!r} needs a teacher with a class "
                             f"token (CLIP / UniFormerV2) as model.mask_teacher; teacher "
                             f"{m.mask_teacher} is a VideoMAE encoder: use mask_type='tube'.")
        self.model = umt.UMTDistill(self.size, tuple(arch), m.drop_path_rate, jnp.dtype(m.dtype),
                                m.remat, m.scan_layers)

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return int(np.prod(self.grid))

    @property
    def num_masked(self) -> int:
        return self.num_tokens - self.grid[0] * self.keep

    def architecture(self) -> dict:
        """The student's description: a fine-tuning run takes model.size=init_from."""
        return architecture.describe("umt_student", self.size, architecture.name_of(
            self.size, {**videomae.SIZES, **umt.STUDENT_SIZES}))

    def _flops(self) -> tuple[float, float]:
        """(student forward, teachers' forward) FLOPs per clip (matmuls and attention, the MFU
        convention of infra/flops.py)."""
        from internvideo_jax.infra.flops import transformer_flops
        s, (t, h, w) = self.size, self.grid
        k_vis = t * self.keep
        student = (2 * k_vis * s.tubelet * s.patch ** 2 * 3 * s.dim
                   + transformer_flops(k_vis, s.dim, s.depth, s.mlp_dim)
                   + sum(2 * k_vis * s.dim * out * k for _, _, k, out, _, _ in self.model.teachers))
        teachers = 0.0
        for kind, size, k, out, _, _ in self.model.teachers:
            if kind == "clip":
                hw = size.grid ** 2
                teachers += t * (2 * hw * size.temporal_kernel * size.patch ** 2 * 3 * size.width
                                 + transformer_flops(1 + hw, size.width, size.layers,
                                                     4 * size.width))
                if size.proj_dim:
                    teachers += 2 * k * t * hw * size.width * size.proj_dim
            else:
                n = t * (self.data.crop_size // size.patch) ** 2
                teachers += (2 * n * size.tubelet * size.patch ** 2 * 3 * size.dim
                             + transformer_flops(n, size.dim, size.depth, size.mlp_dim))
        return float(student), float(teachers)

    def flops_per_example(self) -> float:
        """Forward FLOPs of one clip: the student on its visible tokens and every teacher."""
        return sum(self._flops())

    def train_flops_per_example(self) -> float:
        """Training FLOPs of one clip: the student 3x (forward + backward), the frozen teachers
        forward only."""
        student, teachers = self._flops()
        return 3 * student + teachers

    def init_batch(self, batch_size: int) -> dict:
        mask = np.zeros((batch_size, self.num_tokens), bool)
        mask[:, :self.num_masked] = True
        return {"video": np.zeros((batch_size,) + self.video_shape, np.uint8), "mask": mask}

    def inputs(self, video_uint8):
        """(student video, teacher videos): each normalised its own way, frames subsampled."""
        video = to_unit_range(video_uint8)
        student = standardize(video[:, ::self.config.model.frame_step], self.mean, self.std,
                              self.model.dtype)
        teachers = []
        for step, res, mean, std, dtype in self.teacher_inputs:
            v = video[:, ::step]
            if v.shape[2] != res:  # torch's bicubic interpolate (a = -0.75), as the reference
                mh = jnp.asarray(pos_embed.bicubic_matrix(v.shape[2], res), jnp.float32)
                mw = jnp.asarray(pos_embed.bicubic_matrix(v.shape[3], res), jnp.float32)
                v = jnp.einsum("ph,bthwc,qw->btpqc", mh, v, mw)
            teachers.append(standardize(v, mean, std, dtype))
        return student, tuple(teachers)

    def init_variables(self, rng: jax.Array, batch: dict) -> dict:
        student, teachers = self.inputs(batch["video"])
        visible = videomae.split_by_mask(jnp.asarray(batch["mask"]), self.num_masked)[0]
        return self.model.init(rng, student, teachers, visible)

    # ---- training -----------------------------------------------------------------------------
    def trainable_mask(self, params):
        return unflatten({p: not p[0].startswith("teacher_") for p in flatten(params)})

    def visible_tokens(self, teach_out, batch, rng):
        m = self.config.model
        if m.mask_type == "tube":
            return videomae.split_by_mask(batch["mask"], self.num_masked)[0]
        attn = teach_out[m.mask_teacher][1]  # (B, T', HW)
        return umt.attention_visible(attn, self.keep, rng if m.mask_type == "attention"
                                     else None)

    def loss_fn(self, params, batch: dict, rng: jax.Array, train: bool):
        mask_rng, drop_rng = jax.random.split(rng)
        frozen = {k: jax.lax.stop_gradient(v) for k, v in params.items()
                  if k.startswith("teacher_")}
        student_video, teacher_videos = self.inputs(batch["video"])
        teach_out = self.model.apply({"params": frozen}, teacher_videos, method="teach")
        visible = self.visible_tokens(teach_out, batch, mask_rng)  # (B, K)
        preds = self.model.apply({"params": params}, student_video, visible, not train,
                                 method="learn", rngs={"dropout": drop_rng})
        metrics, loss = {}, 0.0
        for i, ((target, _), pred) in enumerate(zip(teach_out, preds)):
            target = jnp.take_along_axis(jax.lax.stop_gradient(target),
                                         visible[None, :, :, None], axis=2)  # (k, B, K, D)
            li = umt.distill_loss(pred, target)
            metrics[f"loss_teacher_{i}"] = li
            loss = loss + self.specs[i]["weight"] * li
        metrics["loss"] = loss
        return loss, metrics

    def initial_params(self, params: dict) -> tuple[dict, str]:
        """Every teacher from its source (shapes checked); the student as initialised."""
        params, report = dict(params), []
        for i, spec in enumerate(self.specs):
            if not spec["source"]:  # random_teachers: a named size, its initialisation kept
                report.append(f"teacher {i} ({spec['kind']}) at its random initialisation")
                continue
            got = flatten(checkpointing.load_params(spec["source"], scanned=False)[0])
            ours = flatten(params[f"teacher_{i}"])
            src = {}
            for p in ours:
                if spec["kind"] == "videomae":
                    q = spec["prefix"] + p[1:]  # ours: encoder/...
                elif p[0] == "ln_post":
                    q = spec["extra"]["ln_post"] + p[1:]
                elif p[0] == "proj":
                    q = spec["extra"]["proj"]
                else:
                    q = spec["prefix"] + p
                if q not in got:
                    raise ValueError(f"teacher {i} ({spec['source']}) has no {'/'.join(q)}; "
                                     f"its {len(got)} tensors start "
                                     f"{sorted('/'.join(k) for k in got)[:5]}")
                value = np.asarray(got[q])
                if p[-1] == "positional_embedding" and value.shape != tuple(ours[p].shape):
                    g = int(round((ours[p].shape[0] - 1) ** 0.5))  # another resolution
                    value = pos_embed.resize_cls_table(value, (g, g))
                if tuple(value.shape) != tuple(ours[p].shape):
                    raise ValueError(f"teacher {i}: {'/'.join(q)} has shape {got[q].shape}, "
                                     f"expected {ours[p].shape}.")
                src[p] = jnp.asarray(value, ours[p].dtype)
            params[f"teacher_{i}"] = unflatten(src)
            report.append(f"teacher {i} ({spec['kind']}, {len(src)} tensors, frozen) from "
                          f"{spec['source']}")
        return params, "; ".join(report) + "; the student initialised"

    def train_dataset(self, seed: int, local_batch: int, process_index: int, process_count: int,
                      start_step: int = 0):
        d = self.data
        # dense clips, or UMT's TSN segments (data.sampler='segment'); the tube mask is what
        # mask_type='tube' uses
        clip = builders.PretrainClip(
            num_frames=d.num_frames, stride=d.stride, crop_size=d.crop_size, flip=d.flip,
            token_grid=tuple(self.grid), mask_ratio=self.config.model.mask_ratio,
            num_repeats=d.num_repeats, short_video=d.short_video, sample_fps=d.sample_fps,
            sampler=d.sampler)
        return builders.train_stream(d, clip, seed=seed, local_batch=local_batch,
                                     process_index=process_index, process_count=process_count,
                                     start_step=start_step, num_repeats=d.num_repeats)


def build(config, random_teachers: bool = False) -> UMTDistillTask:
    """The UMT task of a config (what a benchmark builds its step from: with random_teachers,
    teacher specs with a `size` and no `source` need no checkpoint, e.g. experiments/umt.py:b16
    with --config.model.teachers[0].size=B/16)."""
    return UMTDistillTask(config, random_teachers)
