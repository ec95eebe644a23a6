"""Two sharded train steps on fixed global batches, from one process or from each process's rows
(tests/test_multiprocess.py compares the two)."""
import flax.linen as nn
import jax
import numpy as np

GLOBAL_BATCH = 8


def run_steps(process_rows: bool) -> tuple[list[float], list[float]]:
    """Losses of 2 steps and the sum of every parameter after them (tiny VideoMAE, 8 devices in
    all, mesh data=4 x fsdp=2). process_rows: this process supplies only its rows of the batch,
    and the processes are the mesh's DCN slices (mesh.dcn_data = the process count)."""
    from input_pipelines.masking import tube_mask
    from internvideo_jax.infra import sharding
    from internvideo_jax.training import train
    from internvideo_jax.tasks import get_task
    from tests.helpers import tiny_config
    config = tiny_config("/nonexistent")
    config.mesh.update(data=4, fsdp=2, tensor=1,
                       dcn_data=jax.process_count() if process_rows else 1)
    task = get_task(config)
    mesh = sharding.make_mesh(config.mesh.to_dict())
    d = {"peak_lr": 1e-3, "min_lr": 0.0, "warmup_steps": 0, "total_steps": 10}
    tx, schedule = train.make_optimizer(config, d)
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        state, shardings = train.create_state(task, tx, mesh, jax.random.key(0))
        step = jax.jit(train.make_train_step(task, tx, schedule, jax.random.key(1)),
                       out_shardings=(shardings, sharding.replicated(mesh)))
        for s in range(2):
            rng = np.random.default_rng(s)
            video = rng.integers(0, 256, (GLOBAL_BATCH,) + task.video_shape, dtype=np.uint8)
            mask = np.stack([tube_mask(task.grid, 0.9, rng) for _ in range(GLOBAL_BATCH)])
            if process_rows:
                per = GLOBAL_BATCH // jax.process_count()
                rows = slice(jax.process_index() * per, (jax.process_index() + 1) * per)
                video, mask = video[rows], mask[rows]
            state, metrics = step(state, sharding.put_batch({"video": video, "mask": mask}, mesh))
            losses.append(float(jax.device_get(metrics["loss"])))
        sums = [float(x) for x in jax.tree.leaves(jax.jit(
            lambda p: jax.tree.map(lambda v: v.sum(), p),
            out_shardings=sharding.replicated(mesh))(state.params))]
    return losses, sums
