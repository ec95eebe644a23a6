"""The keys every run has, each written once, with what it means: `run_config(task)` (seed,
batch and schedule length, optimizer, mesh, logging, checkpointing, resume, evaluation during
training) and `data_config()` (where the videos come from and how they are read). Experiments
add `model`, `augment` and `eval` and set the recipe's values; the code reads every key it uses
from the config, with no second default of its own.
"""
from ml_collections import config_dict


def pipeline_config(**values) -> config_dict.ConfigDict:
    """How any input pipeline reads (threads, workers, bad examples), updated with `values`: the
    part of config.data every task has (localization's feature sequences too)."""
    d = config_dict.ConfigDict(dict(
        num_workers=0, num_threads=2, prefetch_batches=2,
        max_bad_videos=100,  # stop past this many distinct undecodable videos (skipped, counted)
        max_bad_fraction=0.0,  # > 0: also stop past this fraction of the dataset's files bad
        num_repeats=1))  # repeated augmentation: each video this many times per epoch
    d.update(values)
    return d


def data_config(**values) -> config_dict.ConfigDict:
    """config.data of the video tasks: the shared keys at their defaults, updated with `values`."""
    d = pipeline_config(
        dataset="demo",  # 'demo' (embedded), a TFDS name or prepared directory, or
        # '<format>:<annotation file>' (list | csv | ssv2 | captions) to read video files directly
        split="train", data_dir="", video_root="", labels="",
        num_frames=16, stride=2, crop_size=64,
        sampler="dense",  # dense | segment (TSN: one frame per equal segment)
        flip=False, normalization="imagenet",
        short_video="clamp",  # a video shorter than a clip: clamp (repeat the last frame) | skip
        sample_fps=0.0,  # > 0: dense clips by time, frames 1/sample_fps s apart (not `stride`)
        eval_dataset="",  # file lists only: the evaluation list (list:/csv:... of eval.split)
        allow_eval_on_train=False)  # True: evaluating on the training list is intended
    d.update(values)
    return d


def run_config(task: str) -> config_dict.ConfigDict:
    """A run's shared keys; c.model, c.data, c.augment and c.eval are the experiment's. Unlocked."""
    c = config_dict.ConfigDict()
    c.task = task  # internvideo_jax/tasks: TASKS
    c.seed = 0
    c.init_from = ""  # a workdir, checkpoint step or params checkpoint to start from; '' = none
    c.batch_size = 16  # global, over all devices and processes
    c.grad_accum_steps = 1  # > 1: micro-batches scanned, one update (same batch_size)
    c.num_epochs = 1.0
    c.total_steps = -1  # > 0 overrides num_epochs
    c.optim = config_dict.ConfigDict(dict(
        base_lr=1e-3,  # scaled by batch_size / 256
        min_lr=1e-6, warmup_epochs=1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05,
        grad_clip=0.0,  # > 0: clip the global gradient norm
        layer_decay=1.0,  # < 1: layer-wise lr decay over the encoder's blocks (fine-tuning)
        ema_decay=0.0))  # > 0: keep an EMA of the weights (evaluated instead of the weights)
    c.peak_tflops = 0.0  # per-device peak for the logged MFU; 0 = by device kind (flops.py)
    c.mesh = config_dict.ConfigDict(dict(
        data=-1, fsdp=1, tensor=1,  # -1: the devices left over
        dcn_data=1))  # > 1: data parallelism across that many slices (multi-slice)
    c.log_every = 10
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.resume_strict = False  # True: a damaged newest checkpoint stops the run (no fallback)
    c.allow_config_change = ""  # keys that may differ on resume, e.g. "batch_size,total_steps"
    c.evals = config_dict.ConfigDict(dict(
        every_steps=0,  # > 0: run the task's evaluation every that many steps (and at the end)
        views="multi",  # during training: multi (config.eval's clips x crops) | single (1 x 1)
        keep_best=""))  # a logged metric, e.g. eval_top1 (max) or min:eval_loss: keep
    #                     workdir/best, the variables of the step where it was best
    c.pictures = config_dict.ConfigDict(dict(  # pictures while training (host 0, PNG + TensorBoard)
        every_steps=0,  # > 0: the task's pictures every that many steps and at the end
        # (VideoMAE pretraining: reconstructions of fixed clips, workdir/pictures/)
        videos=4,  # how many fixed clips: the first that decode of `split`
        split="validation", seed=0))  # the split they come from; the seed of their masks
    c.features = config_dict.ConfigDict(dict(  # --mode=extract_clip_features (localization)
        splits="",  # comma-separated splits of config.data to extract; '' = data.split
        clip_frames=16, frame_step=1, clip_stride=4,  # the reference: 16 consecutive frames,
        # a clip every 4 (THUMOS) or 16 (ActivityNet) frames
        size=224,  # every frame resized to size x size, no crop
        batch_size=32,  # clips per batch on this process, over its local devices
        name="features",  # the dataset's name: workdir/video_features/<name>/1.0.0
        npy=False))  # also workdir/npy/<split>/<video>.npy, one (N, C) array per video
    return c
