"""Tasks: what a training run optimises. A task = model + input pipeline + loss + metrics.

The trainer (internvideo_jax/train.py) is shared; each task module provides a class with:
  __init__(config)                       validate the config (fails early, naming the fix)
  model                                  the Flax module
  init_batch(batch_size) -> dict         zero arrays with the batch's shapes/dtypes, for init
  init_variables(rng, batch) -> dict     model variables (logically boxed)
  loss_fn(params, batch, rng, train)     -> (scalar loss, dict of scalar metrics)
                                         (tasks with `mutable` collections, e.g. BatchNorm:
                                         loss_fn(..., model_state) -> (loss, (metrics, state)))
  train_dataset(seed, local_batch, process_index, process_count, start_step=0)
                                         -> (grain IterDataset, epoch size); start_step > 0
                                         starts the stream where that many steps ended
Optional: evaluate(variables, mesh, config, out_dir=None, stored_protocol=None) -> dict of
scalars (variables = {'params', ...model state}; run at the end of training and by
`--mode=evaluate`); protocol() -> dict (stored in checkpoints, printed with results);
load_pretrained(params, pretrained) -> (params, loaded, kept) (the trainer then loads
config.init_from before step 0); initial_params(params) -> (params, report) (used instead,
when defined, for a fresh run); trainable_mask(params) -> tree of bools (frozen parameters get
no update and no optimizer state).
"""
from __future__ import annotations


def get_task(config):
    """The task object named by config.task."""
    if config.task == "videomae_pretrain":
        from internvideo_jax.tasks.videomae_pretrain import VideoMAEPretrainTask
        return VideoMAEPretrainTask(config)
    if config.task == "videomae_finetune":
        from internvideo_jax.tasks.videomae_finetune import VideoMAEFinetuneTask
        return VideoMAEFinetuneTask(config)
    if config.task == "uniformerv2_finetune":
        from internvideo_jax.tasks.uniformerv2_finetune import UniFormerV2FinetuneTask
        return UniFormerV2FinetuneTask(config)
    if config.task == "cma":
        from internvideo_jax.tasks.cma import CMATask
        return CMATask(config)
    if config.task == "mm_pretrain":
        from internvideo_jax.tasks.mm_pretrain import MultimodalPretrainTask
        return MultimodalPretrainTask(config)
    raise ValueError(f"Unknown task {config.task!r}; known: 'videomae_pretrain', "
                     f"'videomae_finetune', 'uniformerv2_finetune', 'mm_pretrain', 'cma'.")
