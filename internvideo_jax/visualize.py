r"""VideoMAE reconstructions: what a pretrained masked video encoder makes of a masked clip.

  python -m internvideo_jax.visualize reconstruct --workdir W --video clip.mp4 [--seed 0] \
      [--config experiments/videomae_pretrain.py:tiny] [--out W/reconstruction_clip.png]

writes one PNG: rows original / masked input / reconstruction, one column per tubelet (its first
frame), and prints its path.

The rule is the reference's (MCG-NJU/VideoMAE run_videomae_vis.py) except where marked *:
  - de-normalisation: the model predicts, for each masked tubelet patch, its pixels normalised per
    patch and per channel (norm_pix_loss, training/losses.norm_pixel_target). The reference puts
    the patch statistics back from the *original* clip: with x the original patch on the [0, 1]
    scale, (pt*p*p, 3), reconstruction = pred * (sqrt(unbiased var(x)) + 1e-6) + mean(x), mean and
    var over the patch's pixels, per channel (eps outside the sqrt, as in the loss). A run trained
    without norm_pix_loss predicts [0, 1] pixels, which are taken as they are. The result is
    clipped to [0, 1] and rounded to uint8 (* the reference clamps to [0, 0.996] and truncates).
  - visible patches of the reconstruction are the input's pixels, copied (the reference gets the
    same values back by normalising and de-normalising them).
  - * the masked-input panel: the reference multiplies by the mask, so masked tubes are black. Here
    they are the dataset normalisation's mean pixel (config.data.normalization, e.g. ImageNet's
    (0.485, 0.456, 0.406) -> (124, 116, 104)): the colour of 0 in the model's input space, which
    reads as "no information" on both dark and light videos. Visible tubes are the input.

The CLI's config: the run's own, from W/config.json (what training stored, the whole config), so
that the model, frames, stride, crop, normalisation and mask ratio are the run's. --config builds
the experiment's preset (importlib of the file, get_config(preset)) as the base instead, and the
stored values of keys the preset has are applied on top (scalars and lists only); a workdir
without config.json needs --config. The clip: the video's first dense clip (frames 0, stride,
2*stride, ...; the last frame repeated past the end), the short side resized to crop_size and
the centre crop_size^2 taken (as evaluation views are made); the mask: a tube mask at the run's
mask ratio, from numpy's default_rng(seed).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np

PANELS = ("original", "masked", "reconstruction")
LABELS = {"original": "original", "masked": "masked input", "reconstruction": "reconstruction"}
LABEL_WIDTH = 100  # px left of the first column, for the row labels
HEADER = 16  # px above the first row, for the frame numbers
GAP = 2  # px between cells
MARGIN = 4  # px around the grid
BACKGROUND = (255, 255, 255)


# ---- Patches ----------------------------------------------------------------------------------

def patchify(video: np.ndarray, patch: tuple[int, int, int]) -> np.ndarray:
    """(T, H, W, C) -> (N, pt*ph*pw, C): tokens in (t, h, w) order, pixels in (pt, ph, pw) order
    (the order of models/layers.patchify and the model's predictions)."""
    t, h, w, c = video.shape
    pt, ph, pw = patch
    x = video.reshape(t // pt, pt, h // ph, ph, w // pw, pw, c).transpose(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(-1, pt * ph * pw, c)


def unpatchify(patches: np.ndarray, patch: tuple[int, int, int],
               video_shape: tuple[int, int, int, int]) -> np.ndarray:
    """(N, pt*ph*pw, C) -> (T, H, W, C), the inverse of patchify."""
    t, h, w, c = video_shape
    pt, ph, pw = patch
    x = patches.reshape(t // pt, h // ph, w // pw, pt, ph, pw, c).transpose(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(video_shape)


def denormalize(pred: np.ndarray, original01: np.ndarray) -> np.ndarray:
    """The reference's de-normalisation of norm-pixel predictions.

    Args:
      pred: (M, P, C) predicted normalised pixels of M patches.
      original01: (M, P, C) the original clip's same patches on the [0, 1] scale.
    Returns:
      (M, P, C) float64: pred * (sqrt(unbiased var) + 1e-6) + mean, statistics over P per channel.
    """
    x = original01.astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = np.sqrt(x.var(axis=1, ddof=1, keepdims=True))
    return pred.astype(np.float64) * (std + 1e-6) + mean


def to_uint8(pixels01: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8: clipped, times 255, rounded to nearest."""
    return np.rint(np.clip(pixels01, 0.0, 1.0) * 255.0).astype(np.uint8)


def mean_pixel(task) -> np.ndarray:
    """(3,) uint8: the task's normalisation mean on the 0..255 scale, rounded."""
    return to_uint8(np.asarray(task.mean, np.float64))


def token_mask_to_pixels(mask: np.ndarray, patch: tuple[int, int, int],
                         video_shape: tuple[int, int, int, int]) -> np.ndarray:
    """(N,) bool token mask -> (T, H, W) bool, True on the pixels of masked tubelets."""
    p = int(np.prod(patch))
    per_pixel = np.broadcast_to(mask[:, None, None], (mask.shape[0], p, 1))
    return unpatchify(per_pixel, patch, video_shape[:3] + (1,))[..., 0]


# ---- The model's reconstruction ---------------------------------------------------------------

def _check_inputs(task, video: np.ndarray, mask: np.ndarray) -> None:
    if video.dtype != np.uint8 or video.shape != tuple(task.video_shape):
        raise ValueError(f"video must be uint8 of shape {tuple(task.video_shape)} (the run's "
                         f"num_frames, crop_size, crop_size, 3), got {video.dtype} "
                         f"{video.shape}.")
    if mask.dtype != np.bool_ or mask.shape != (task.num_tokens,):
        raise ValueError(f"mask must be bool of shape ({task.num_tokens},) (the token grid "
                         f"{tuple(task.grid)} flattened), got {mask.dtype} {mask.shape}.")
    expected = task.model.num_masked((1,) + tuple(task.video_shape))
    if int(mask.sum()) != expected:
        raise ValueError(f"mask hides {int(mask.sum())} tokens; the model (mask_ratio="
                         f"{task.mask_ratio}) takes exactly {expected}: use "
                         f"input_pipelines.masking.tube_mask with the run's ratio.")


def predict(task, variables, video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The model's predictions for one clip: (M, pt*p*p, 3) float32, masked tokens in ascending
    order. video (T, S, S, 3) uint8, mask (N,) bool (True = masked)."""
    return predict_batch(task, variables, video[None], mask[None])[0]


def predict_batch(task, variables, videos: np.ndarray, masks: np.ndarray,
                  mesh=None) -> np.ndarray:
    """predict() for K clips in one forward: videos (K, T, S, S, 3) uint8, masks (K, N) bool ->
    (K, M, pt*p*p, 3) float32.

    mesh: the run's mesh while training (params sharded over it): the clips go in replicated and
    the predictions come back replicated, so every process of a multi-host run calls this with
    the same clips and each gets the whole answer. None: the variables' own devices.
    """
    import flax.linen as nn
    import jax
    variables = nn.meta.unbox(variables)
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        videos, masks = (jax.device_put(np.asarray(a), replicated) for a in (videos, masks))
    out = _forward(task, mesh)(variables, videos, masks)
    out = np.asarray(out, np.float32)
    return out.reshape(out.shape[0], out.shape[1], -1, 3)


def _forward(task, mesh):
    """The jitted forward of predict_batch, one per (task, mesh), kept on the task: a run that
    draws every N steps compiles it once."""
    import jax
    cache = task.__dict__.setdefault("_visualize_forward", {})
    if mesh not in cache:
        def forward(v, x, m):
            return task.model.apply(v, task.normalize(x), m)  # (K, M, P*3)
        replicated = (None if mesh is None else
                      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        cache[mesh] = jax.jit(forward, out_shardings=replicated)
    return cache[mesh]


def reconstruction(task, variables, video: np.ndarray, mask: np.ndarray) -> dict:
    """The three panels of a clip, by the rule in this module's docstring.

    Args:
      task: a VideoMAEPretrainTask (tasks/videomae_pretrain.py).
      variables: its variables ({'params': ...}, boxed or not).
      video: (T, S, S, 3) uint8, the run's num_frames and crop_size.
      mask: (N,) bool, True = masked, with the model's number of masked tokens (a tube mask).
    Returns:
      {'original', 'masked', 'reconstruction'}: each (T, S, S, 3) uint8.
    """
    video, mask = np.asarray(video), np.asarray(mask)
    _check_inputs(task, video, mask)
    return panels_of(task, video, mask, predict(task, variables, video, mask))


def panels_of(task, video: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> dict:
    """reconstruction()'s panels from the model's predictions pred (M, pt*p*p, 3) of the clip
    video (T, S, S, 3) uint8 under mask (N,) bool."""
    patch, shape = tuple(task.patch), video.shape
    original01 = patchify(video.astype(np.float64) / 255.0, patch)  # (N, P, 3)
    pixels01 = denormalize(pred, original01[mask]) if task.norm_pix_loss else pred
    patches = patchify(video, patch).copy()  # (N, P, 3) uint8
    patches[mask] = to_uint8(pixels01)
    hidden = token_mask_to_pixels(mask, patch, shape)  # (T, S, S)
    masked = np.where(hidden[..., None], mean_pixel(task), video).astype(np.uint8)
    return {"original": video.copy(), "masked": masked,
            "reconstruction": unpatchify(patches, patch, shape)}


# ---- The picture ------------------------------------------------------------------------------

def cell_origin(row: int, column: int, size: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of the cell in `row` (PANELS order) and `column` of the grid
    write_grid draws, for frames of size x size."""
    return (MARGIN + LABEL_WIDTH + column * (size + GAP), MARGIN + HEADER + row * (size + GAP))


def grid_size(rows: int, columns: int, size: int) -> tuple[int, int]:
    """(width, height) of write_grid's PNG."""
    x, y = cell_origin(rows, columns, size)
    return x - GAP + MARGIN, y - GAP + MARGIN


def write_grid(panels: dict, path: str, frames=None) -> tuple[int, int]:
    """One PNG of a clip's panels: rows original / masked input / reconstruction, one column per
    frame, GAP px between cells, row labels on the left, frame numbers on top. Deterministic.

    Args:
      panels: reconstruction()'s dict, each (T, S, S, 3) uint8.
      path: the PNG to write (its directory is created).
      frames: the frame indices to show, in order; None = all T.
    Returns:
      (width, height) of the image: grid_size(3, len(frames), S).
    """
    from PIL import Image, ImageDraw, ImageFont
    missing = [k for k in PANELS if k not in panels]
    if missing:
        raise ValueError(f"panels lacks {missing}; it needs {list(PANELS)} (reconstruction()).")
    shapes = {k: np.asarray(panels[k]).shape for k in PANELS}
    t, s = shapes["original"][0], shapes["original"][1]
    if len(set(shapes.values())) != 1 or shapes["original"] != (t, s, s, 3):
        raise ValueError(f"the panels must all be (T, S, S, 3) uint8, got {shapes}.")
    frames = list(range(t)) if frames is None else [int(f) for f in frames]
    bad = [f for f in frames if not 0 <= f < t]
    if not frames or bad:
        raise ValueError(f"frames must be a non-empty list of indices in [0, {t}), got "
                         f"{frames}.")
    image = Image.new("RGB", grid_size(len(PANELS), len(frames), s), BACKGROUND)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for c, f in enumerate(frames):
        x, _ = cell_origin(0, c, s)
        draw.text((x, MARGIN), str(f), font=font, fill="black")
    for r, key in enumerate(PANELS):
        _, y = cell_origin(r, 0, s)
        draw.text((MARGIN, y + max(0, s // 2 - 6)), LABELS[key], font=font, fill="black")
        for c, f in enumerate(frames):
            image.paste(Image.fromarray(np.asarray(panels[key][f], np.uint8), "RGB"),
                        cell_origin(r, c, s))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format="PNG")
    return image.size


# ---- During training (config.pictures) ----------------------------------------------------

def fixed_clips(task, config) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The clips a pretraining run draws every config.pictures.every_steps: the first
    config.pictures.videos videos of config.pictures.split that decode (undecodable ones skipped),
    each one centre view (EvalViews: 1 clip x 1 crop, the run's frames, stride and crop), with a
    tube mask from default_rng([pictures.seed, k]) for the k-th video: the same clips and masks at
    every step, so the pictures of a run show the same thing getting better.

    Returns (video ids, videos (K, T, S, S, 3) uint8, masks (K, N) bool)."""
    from input_pipelines import builders, masking, robust
    from internvideo_jax.evaluation.evaluate import eval_data_config
    p, d = config.pictures, config.data
    source = builders.open_data_source(eval_data_config(config, p.split))
    views = builders.EvalViews(d.num_frames, d.stride, d.crop_size, 1, 1, d.sampler,
                               d.sample_fps)
    ids, videos, masks = [], [], []
    for index in range(len(source)):
        if len(ids) == p.videos:
            break
        example = source[index]
        try:
            video = views(example, index)["video"][0]  # (T, S, S, 3)
        except robust.LOAD_ERRORS:
            continue
        vid = example.get("video_id", b"")
        vid = vid.decode() if isinstance(vid, bytes) else str(vid)
        ids.append(vid or f"{p.split}_{index}")
        videos.append(video)
        masks.append(masking.tube_mask(tuple(task.grid), task.mask_ratio,
                                       np.random.default_rng([p.seed, len(masks)])))
    if not ids:
        raise ValueError(f"pictures: no video of data split {p.split!r} decodes: set "
                         f"--config.pictures.split to another split or pictures.every_steps=0.")
    return ids, np.stack(videos), np.stack(masks)


def picture_path(out_dir: str, video_id: str, step: int) -> str:
    """out_dir/pictures/reconstruction_<video>_step<step>.png (the video's id made a safe name)."""
    from internvideo_jax.localization.features import file_name
    return os.path.join(out_dir, "pictures", f"reconstruction_{file_name(video_id)}_"
                                             f"step{step:07d}.png")


def draw_reconstructions(task, clips, predictions: np.ndarray, out_dir: str,
                         step: int) -> dict[str, str]:
    """write_grid of each fixed clip (fixed_clips' triple) from its predictions (K, M, P, 3):
    {video id: PNG path}."""
    ids, videos, masks = clips
    written = {}
    for vid, video, mask, pred in zip(ids, videos, masks, predictions):
        path = picture_path(out_dir, vid, step)
        write_grid(panels_of(task, video, mask, pred), path,
                   frames=range(0, video.shape[0], task.patch[0]))
        written[vid] = path
    return written


# ---- The CLI ----------------------------------------------------------------------------------

def _experiment_config(spec: str):
    """'path/to/experiment.py[:preset]' -> get_config(preset) of that file, imported by path."""
    file, _, preset = spec.partition(":")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"--config {spec}: no experiment file {file}")
    module_spec = importlib.util.spec_from_file_location("_visualize_experiment", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


def _apply_stored(config, stored: dict) -> None:
    """Set the stored run's values on `config` for the keys it has: scalars and lists only."""
    from ml_collections import config_dict
    for key, value in stored.items():
        if key not in config:
            continue
        if isinstance(config[key], config_dict.ConfigDict):
            if isinstance(value, dict):
                _apply_stored(config[key], value)
        elif value is None or isinstance(value, (bool, int, float, str, list)):
            if isinstance(config[key], float) and type(value) is int:
                value = float(value)  # a stored 6 where the preset has 6.0
            elif isinstance(config[key], tuple) and isinstance(value, list):
                value = tuple(value)  # JSON has no tuples
            with config.unlocked():
                config[key] = value


def load_config(workdir: str, config_spec: str = ""):
    """The run's config (see the module docstring): W/config.json, over --config's preset when
    given."""
    from ml_collections import config_dict
    path = os.path.join(workdir, "config.json")
    stored = None
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f).get("config")
    if stored is None and not config_spec:
        raise FileNotFoundError(f"{path} is missing (or holds no 'config'): pass --config "
                                f"experiments/videomae_pretrain.py:PRESET to say what the run was.")
    if not config_spec:
        config = config_dict.ConfigDict(stored)
    else:
        config = _experiment_config(config_spec)
        if stored is not None:
            _apply_stored(config, stored)
    if config.task != "videomae_pretrain":
        raise ValueError(f"{workdir} is a {config.task!r} run; reconstructions need a "
                         f"'videomae_pretrain' one (a model with a pixel decoder).")
    return config


def first_clip(path: str, num_frames: int, stride: int, crop_size: int) -> np.ndarray:
    """(num_frames, crop_size, crop_size, 3) uint8: frames 0, stride, ... of the video file (the
    last one repeated past the end), short side resized to crop_size, centre crop."""
    from input_pipelines import decode, transforms
    with open(path, "rb") as f:
        data = f.read()
    with decode.Video(data) as video:
        idx = np.minimum(stride * np.arange(num_frames), video.num_frames - 1)
        frames = video.frames(idx)
        w, h = decode.display_size(frames[0])
        rw, rh = transforms.short_side_size(w, h, crop_size)
        x, y, _, _ = transforms.three_crop_boxes(rw, rh, crop_size)[1]
        box = (x * w / rw, y * h / rh, crop_size * w / rw, crop_size * h / rh)
        return transforms.scaled_crop(frames, box, crop_size, "BILINEAR")


def reconstruct(workdir: str, video_path: str, config_spec: str = "", out: str = "",
                seed: int = 0) -> str:
    """The CLI's work: the run's latest checkpoint on the video's first clip -> the PNG's path."""
    import flax.linen as nn
    import jax

    from input_pipelines import masking
    from internvideo_jax.infra import sharding
    from internvideo_jax.offline import restore_variables
    from internvideo_jax.tasks import get_task
    config = load_config(workdir, config_spec)
    task = get_task(config)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.local_devices()[:1])
    variables, _ = restore_variables(task, workdir, mesh, float(config.optim.ema_decay) > 0)
    d = config.data
    video = first_clip(video_path, d.num_frames, d.stride, d.crop_size)
    mask = masking.tube_mask(tuple(task.grid), task.mask_ratio, np.random.default_rng(seed))
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        panels = reconstruction(task, variables, video, mask)
    stem = os.path.splitext(os.path.basename(video_path))[0]
    out = out or os.path.join(workdir, f"reconstruction_{stem}.png")
    write_grid(panels, out, frames=range(0, d.num_frames, task.patch[0]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m internvideo_jax.visualize",
                                     description="VideoMAE reconstruction pictures.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reconstruct", help="original / masked / reconstruction of a video's "
                                           "first clip, as a PNG")
    r.add_argument("--workdir", required=True, help="a videomae_pretrain run's workdir")
    r.add_argument("--video", required=True, help="a video file")
    r.add_argument("--config", default="", help="experiment file[:preset] as the config's base "
                                                "(default: the workdir's config.json alone)")
    r.add_argument("--out", default="", help="the PNG (default W/reconstruction_<stem>.png)")
    r.add_argument("--seed", type=int, default=0, help="the tube mask's seed")
    args = parser.parse_args(argv)
    print(reconstruct(args.workdir, args.video, args.config, args.out, args.seed))


if __name__ == "__main__":
    main(sys.argv[1:])
