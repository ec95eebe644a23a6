r"""Linear probe: a softmax classifier on frozen encoder features (the fine-tuning baseline).

  python -m internvideo_jax.linear_probe --config experiments/finetune.py:tiny \
      --config.init_from=workdirs/demo/pretrain --workdir workdirs/demo/linear_probe

Features: the task's `pooled_features` (VideoMAE: the mean of the encoder's tokens) of the
encoder loaded from config.init_from, frozen. Training set: one centre view (the first of the
test clips, centre crop) of every config.data.split video; evaluation: config.eval's multi-view
protocol on config.eval.split (softmax per view, mean per video). Features are standardised with
the training set's mean/std, then multinomial logistic regression with an L2 penalty is fitted by
full-batch L-BFGS; the penalty is chosen from `L2_GRID` on a held-out 20% of the training videos
and refitted on all of them. Writes WORKDIR/linear_probe.json.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from internvideo_jax.evaluation.evaluate import accuracy_metrics, map_over_split, skipped_report
from internvideo_jax.infra import sharding
from internvideo_jax.models import layout
from internvideo_jax.tasks import get_task
from internvideo_jax.training import checkpointing

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float,
                 steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Minimise mean CE(x @ w + b, y) + l2/2 * |w|^2 by L-BFGS. x (N, D), y (N,) ->
    (w (D, K), b (K,))."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)

    def objective(p):
        logits = x @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * l2 * jnp.sum(p["w"] ** 2)

    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                        value_fn=objective)
            return (optax.apply_updates(params, updates), state), None
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params

    params = run(params)
    return np.asarray(params["w"]), np.asarray(params["b"])


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every array by the training features' per-dimension mean and std."""
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    return [(a - mean) / std for a in (train,) + others]


def probe(train_x: np.ndarray, train_y: np.ndarray, test_views: np.ndarray,
          num_classes: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Fit on (N, D) features; score (M, V, D) test views -> ((M, K) mean per-view softmax,
    the chosen l2)."""
    flat = test_views.reshape(-1, test_views.shape[-1])
    train_x, flat = standardise(train_x, flat)
    order = np.random.default_rng(seed).permutation(len(train_x))
    held, fit = order[:len(order) // 5], order[len(order) // 5:]
    best = (-1.0, L2_GRID[0])
    for l2 in L2_GRID:
        w, b = fit_logistic(train_x[fit], train_y[fit], num_classes, l2)
        accuracy = float(np.mean((train_x[held] @ w + b).argmax(1) == train_y[held]))
        best = max(best, (accuracy, l2), key=lambda t: t[0])
    w, b = fit_logistic(train_x, train_y, num_classes, best[1])
    probs = np.asarray(jax.nn.softmax(flat @ w + b, axis=-1))
    return probs.reshape(test_views.shape[:2] + (num_classes,)).mean(axis=1), best[1]


def run(config, workdir: str) -> dict:
    import flax.linen as nn
    if not config.init_from:
        raise ValueError("--config.init_from must name the pretrained encoder to probe.")
    mesh = sharding.make_mesh(config.mesh.to_dict())
    task = get_task(config)
    if not task.implements("pooled_features"):
        raise ValueError(f"task {config.task!r} defines no pooled features to probe.")
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        params = nn.meta.unbox(task.init_variables(jax.random.key(0), task.init_batch(1)))
        pretrained, _ = checkpointing.load_params(config.init_from,
                                                  scanned=layout.is_scanned(params["params"]))
        params, loaded, _ = task.load_pretrained(params["params"], pretrained)
        train_config = config.copy_and_resolve_references()
        with train_config.unlocked():
            train_config.eval.update(split=config.data.split, num_clips=1, num_crops=1)
        train = map_over_split(task.pooled_features, {"params": params}, mesh, train_config,
                               task.eval_views(train_config))
        test = map_over_split(task.pooled_features, {"params": params}, mesh, config,
                              task.eval_views())
    scores, l2 = probe(train["outputs"][:, 0], train["label"], test["outputs"], task.num_classes,
                       config.seed)
    result = {"init_from": config.init_from, "tensors_loaded": len(loaded), "l2": l2,
              "train_videos": int(len(train["label"])),
              "skipped_train_videos": len(train["skipped"]),
              **accuracy_metrics(scores, test["label"], task.num_classes),
              **skipped_report(test["skipped"])}
    print(f"linear probe on {config.eval.split}: top-1 {100 * result['top1']:.2f} "
          f"(l2 {l2}, {result['train_videos']} training videos)", flush=True)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "linear_probe.json"), "w") as f:
            json.dump(result, f, indent=1)
    return result


def main(argv) -> None:
    del argv
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file:preset.",
                                              lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "Where linear_probe.json is written.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
