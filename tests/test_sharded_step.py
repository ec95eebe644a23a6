"""One training step sharded over 8 fake CPU devices (data=2, fsdp=2, tensor=2) equals the same
step on one device.

Tolerances. Loss and gradient norm: rtol 1e-5 (float32; the sharded program sums partial matmuls
and gradient reductions across devices in another order, round-off ~1e-7 relative). Parameters after
the step: atol 1e-5 = 1% of the learning rate (1e-3). Adam's first update is lr * g / (|g| + eps),
so for the few gradient entries whose magnitude is near eps = 1e-8 a round-off of ~1e-9 in g moves
the update by ~1e-3 of lr (seen: 1.9e-6 on 1 of 4096 entries); the mean difference stays ~1e-9.
A real sharding bug (a missing all-reduce, a local-only mean, a wrong gather) moves most entries by
O(lr) = 1e-3.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from input_pipelines.masking import tube_mask
from internvideo_jax.infra import sharding
from internvideo_jax.training import train
from internvideo_jax.tasks import get_task
from tests.helpers import tiny_config


def _one_step(config, mesh, batch, accum_steps=1):
    task = get_task(config)
    d = {"peak_lr": 1e-3, "min_lr": 1e-5, "warmup_steps": 0, "total_steps": 10}
    tx, schedule = train.make_optimizer(config, d)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        state, shardings = train.create_state(task, tx, mesh, jax.random.key(0))
        before = jax.device_get(state.params)
        bs = {k: sharding.batch_sharding(mesh, v.ndim) for k, v in batch.items()}
        step = jax.jit(train.make_train_step(task, tx, schedule, jax.random.key(1), accum_steps),
                       in_shardings=(shardings, bs), out_shardings=(shardings, None))
        state, metrics = step(state, sharding.put_batch(batch, mesh))
        return before, jax.device_get(state.params), jax.device_get(metrics), state


def test_sharded_step_equals_single_device_step(data_dir):
    config = tiny_config(data_dir, **{"model.drop_path_rate": 0.1})  # drop path uses the rng too
    rng = np.random.default_rng(0)
    grid = (8, 8, 8)
    batch = {"video": rng.integers(0, 256, (8, 16, 64, 64, 3)).astype(np.uint8),
             "mask": np.stack([tube_mask(grid, 0.9, rng) for _ in range(8)])}

    single = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    multi = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    before1, after1, m1, _ = _one_step(config, single, batch)
    before8, after8, m8, state8 = _one_step(config, multi, batch)

    # Same initial parameters whatever the sharding (partitionable threefry).
    jax.tree.map(np.testing.assert_array_equal, before1, before8)
    # The parameters really are sharded as the rules say.
    qkv = state8.params["encoder"]["transformer"]["blocks_0"]["attn"]["qkv"]["kernel"]
    assert qkv.sharding.spec == P("fsdp", None, "tensor", None)
    fc1 = state8.params["encoder"]["transformer"]["blocks_0"]["mlp"]["fc1"]["kernel"]
    assert fc1.sharding.spec == P("fsdp", "tensor")
    assert fc1.addressable_shards[0].data.shape == (64, 256)  # (128, 512) split 2 x 2

    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5), after8, after1)
    mean_diff = jax.tree.map(lambda a, b: float(np.abs(a - b).mean()), after8, after1)
    assert max(jax.tree.leaves(mean_diff)) < 1e-7
    # And the step did change the parameters (the comparison above is not vacuous).
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), after1, before1)
    assert max(jax.tree.leaves(moved)) > 1e-4


def test_gradient_accumulation_equals_the_whole_batch_step(data_dir):
    """4 micro-batches of 2 (scanned, on 8 devices: data=4 x fsdp=2) give the update of one
    batch of 8: the masked MSE is a mean over equal-sized examples, so the mean of micro-batch
    gradients is the whole-batch gradient. Same tolerances as above."""
    config = tiny_config(data_dir)  # no drop path: the micro-steps draw other random numbers
    rng = np.random.default_rng(1)
    batch = {"video": rng.integers(0, 256, (8, 16, 64, 64, 3)).astype(np.uint8),
             "mask": np.stack([tube_mask((8, 8, 8), 0.9, rng) for _ in range(8)])}
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1}, jax.devices()[:8])
    _, whole, m1, _ = _one_step(config, mesh, batch)
    before, accumulated, m4, _ = _one_step(config, mesh, batch, accum_steps=4)
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5),
                 accumulated, whole)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), accumulated, before)
    assert max(jax.tree.leaves(moved)) > 1e-4
    # micro-batch i takes rows i, i + 4: every device holds part of every micro-batch
    micro = train.micro_batches({"x": np.arange(8)}, 4)["x"]
    np.testing.assert_array_equal(micro, [[0, 4], [1, 5], [2, 6], [3, 7]])


def test_batch_not_divisible_by_accumulation_fails_early(data_dir):
    import pytest
    config = tiny_config(data_dir, grad_accum_steps=3)
    mesh = sharding.make_mesh({"data": 8, "fsdp": 1, "tensor": 1}, jax.devices()[:8])
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        train.check_batch(config, mesh)


def test_bytes_per_device_follow_the_strategy(data_dir):
    """Data parallel: every device holds all parameters. FSDP over 8: each holds its shard of every
    'embed'-sharded tensor, so the fullest device holds about 1/8 (plus the small replicated
    tensors); the optimizer state is placed like the parameters. Checked against a count by hand
    from the shapes and the partition specs."""
    config = tiny_config(data_dir)
    task = get_task(config)
    tx, _ = train.make_optimizer(config, {"peak_lr": 1e-3, "min_lr": 0.0, "warmup_steps": 0,
                                          "total_steps": 10})
    out = {}
    for name, axes in (("dp", {"data": 8, "fsdp": 1, "tensor": 1}),
                       ("fsdp", {"data": 1, "fsdp": 8, "tensor": 1})):
        mesh = sharding.make_mesh(axes)
        with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
            state, _ = train.create_state(task, tx, mesh, jax.random.key(0))
        out[name] = (sharding.bytes_per_device(state.params),
                     sharding.bytes_per_device(state.opt_state))
        if name == "fsdp":  # by hand: a leaf's bytes / the mesh sizes of the axes in its spec
            want = 0
            for leaf in jax.tree.leaves(state.params):
                axes_used = [a for entry in leaf.sharding.spec if entry is not None
                             for a in ((entry,) if isinstance(entry, str) else entry)]
                want += leaf.nbytes // int(np.prod([mesh.shape[a] for a in axes_used]))
            assert out[name][0]["max_device"] == want
    dp, fsdp = out["dp"], out["fsdp"]
    assert dp[0]["max_device"] == dp[0]["total"] == fsdp[0]["total"]
    assert fsdp[0]["max_device"] < 0.2 * fsdp[0]["total"]
    # Adam's two moments: twice the parameters' bytes, split the same way (+ the step counts).
    assert abs(fsdp[1]["max_device"] - 2 * fsdp[0]["max_device"]) <= 64
    assert "MiB on the fullest device" in sharding.describe_placement("params", state.params)


def test_remat_policies_change_memory_not_results(data_dir):
    """Every policy gives the same gradients (recomputation is exact up to float reassociation)
    and keeps fewer bytes of residuals for the backward pass, in the expected order: none (44 MiB
    here) > dots (23) > dots_no_batch (14) > full (8: only each block's input)."""
    from jax._src.ad_checkpoint import saved_residuals  # what jax.ad_checkpoint prints
    from internvideo_jax.models import layers
    grads, saved = {}, {}
    for policy in layers.REMAT_POLICIES:
        config = tiny_config(data_dir, **{"model.remat": policy})
        task = get_task(config)
        batch = task.init_batch(2)
        batch["video"] = np.random.default_rng(1).integers(0, 256, batch["video"].shape,
                                                           dtype=np.uint8)
        params = nn.meta.unbox(task.init_variables(jax.random.key(0), batch))["params"]
        loss = lambda p: task.loss_fn(p, batch, jax.random.key(2), True)[0]  # noqa: E731
        grads[policy] = jax.device_get(jax.jit(jax.grad(loss))(params))
        saved[policy] = sum(int(np.prod(a.shape)) * a.dtype.itemsize
                            for a, _ in saved_residuals(loss, params))
    for policy, g in grads.items():
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(grads["none"])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=policy)
    assert saved["none"] > saved["dots"] > saved["dots_no_batch"] > saved["full"], saved
    with pytest.raises(ValueError, match="Unknown remat policy 'some'"):
        layers.remat_block("some")


def test_fit_planner_on_the_local_devices(data_dir):
    """plan() compiles the real train step for the given devices: its per-chip parameter and
    optimizer-state bytes equal what the trainer really places (bytes_per_device of the created
    state), and the compiler's buffers are reported."""
    from internvideo_jax import plan
    config = tiny_config(data_dir)
    config.mesh.update(data=1, fsdp=8, tensor=1)
    report = plan.plan(config, "local")
    task = get_task(config)
    mesh = sharding.make_mesh(config.mesh.to_dict())
    d = {"peak_lr": 1e-3, "min_lr": 0.0, "warmup_steps": 0, "total_steps": 10}
    tx, _ = train.make_optimizer(config, d)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.RULES):
        state, _ = train.create_state(task, tx, mesh, jax.random.key(0))
    assert report["chips"] == 8 and report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    got = report["per_chip_bytes"]
    assert got["params"] == sharding.bytes_per_device(state.params)["max_device"]
    assert got["optimizer_state"] == sharding.bytes_per_device(state.opt_state)["max_device"]
    assert got["params"] < 0.2 * sharding.bytes_per_device(state.params)["total"]  # sharded
    assert got["temp"] > 0
    assert report["fits"] is None  # no HBM figure for CPU devices
    assert report["model_tflop_per_step"] == pytest.approx(
        3 * task.flops_per_example() * config.batch_size / 1e12)

    # Communication, read from the compiled step. FSDP over 8: every gather is over 'fsdp', and
    # each parameter the rules shard is gathered whole at least once (forward) and at most twice
    # (again for the backward); the gradients are reduced over 'fsdp' (XLA:CPU all-reduces them,
    # TPUs reduce-scatter), every parameter's bytes at least once.
    total = sharding.bytes_per_device(state.params)["total"]
    sharded = sum(x.nbytes for x in jax.tree.leaves(state.params)
                  if x.sharding.shard_shape(x.shape) != x.shape)
    rows = report["collectives_per_chip"]
    gathers = [r for r in rows if r["kind"] == "all-gather"]
    assert gathers and {r["axes"] for r in gathers} == {"fsdp"}, rows
    assert sharded <= sum(r["full_bytes"] for r in gathers) <= 2 * sharded
    reduced = sum(r["full_bytes"] for r in rows if r["kind"] in ("all-reduce", "reduce-scatter"))
    assert reduced >= total and {r["axes"] for r in rows} == {"fsdp"}
    assert any(line.startswith("all-gather f32 over fsdp (8 chips)")
               for line in report["collectives_summary"])


def test_fit_planner_counts_data_parallel_gradient_all_reduce_exactly(data_dir):
    """Pure data parallelism moves exactly the gradients: no gathers, and one chip's all-reduce
    bytes over 'data' are the parameters' f32 bytes plus a few scalars (loss and metrics)."""
    from internvideo_jax import plan
    config = tiny_config(data_dir)
    config.mesh.update(data=8, fsdp=1, tensor=1)
    report = plan.plan(config, "local")
    params = report["parameters"] * 4
    rows = report["collectives_per_chip"]
    assert [(r["kind"], r["axes"], r["group_size"]) for r in rows] == [("all-reduce", "data", 8)]
    assert params <= rows[0]["full_bytes"] <= params + 64
    assert rows[0]["ring_bytes"] == pytest.approx(2 * 7 / 8 * rows[0]["full_bytes"])


def test_dcn_slices_are_the_outer_factor_of_data():
    """Two 4-device slices, mesh data=4 (2 over DCN x 2 within a slice) x fsdp=2: every fsdp
    group (parameter all-gathers) stays inside one slice, only 'data' crosses slices, and a
    reduction over the whole mesh is right. On one process there is one slice: dcn_data=2 is
    refused, naming the count."""
    devices = jax.devices()
    slices = [devices[:4], devices[4:]]
    grid = sharding.hybrid_grid(slices, (4, 2, 1))
    assert grid.shape == (4, 2, 1)
    for i in range(4):
        owner = {0 if d in slices[0] else 1 for d in grid[i].ravel()}
        assert owner == {i // 2}, (i, owner)
    mesh = jax.sharding.Mesh(grid, sharding.MESH_AXES)
    x = jax.device_put(np.arange(8.0), jax.sharding.NamedSharding(mesh, P(("data", "fsdp"))))
    assert float(jax.jit(lambda v: v.sum())(x)) == 28.0
    with pytest.raises(ValueError, match=r"dcn_data=2 but the 8 devices form 1 slice"):
        sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 1, "dcn_data": 2})
    with pytest.raises(ValueError, match=r"dcn_data=3 slices must divide mesh.data=4"):
        sharding.hybrid_grid([devices[:3], devices[3:6], devices[6:]], (4, 2, 1))
