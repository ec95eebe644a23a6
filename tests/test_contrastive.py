"""The contrastive loss uses the global batch as negatives, across all devices, with gradients."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from internvideo_jax.infra import sharding
from internvideo_jax.training import losses


def _numpy_clip_loss(v, t, logit_scale):
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = np.exp(min(max(logit_scale, 0.0), np.log(100.0))) * v @ t.T

    def ce(x):  # rows: mean of -log softmax at the diagonal
        x = x - x.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(x).sum(1)) - np.diag(x)))

    return (ce(logits) + ce(logits.T)) / 2


def _loss(w, v, t, scale):
    return losses.contrastive_loss(v @ w, t, scale)[0]  # a projection so that grads flow to params


def test_sharded_loss_and_grads_equal_the_full_batch_computation():
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    b, d = 16, 12
    v = rng.normal(size=(b, d)).astype(np.float32)
    t = rng.normal(size=(b, d)).astype(np.float32)
    w = (np.eye(d) + 0.1 * rng.normal(size=(d, d))).astype(np.float32)
    scale = np.float32(np.log(1 / 0.07))
    grad_fn = jax.value_and_grad(_loss, argnums=(0, 1, 2, 3))

    one = jax.devices()[0]
    ref_loss, ref_grads = jax.jit(grad_fn)(*jax.device_put((w, v, t, scale), one))
    np.testing.assert_allclose(float(ref_loss), _numpy_clip_loss(v @ w, t, float(scale)),
                               rtol=1e-5)

    mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})  # the trainer's mesh
    rows = sharding.batch_sharding(mesh, 2)  # batch over data x fsdp: 2 examples per device
    rep = NamedSharding(mesh, P())
    sv, st = jax.device_put(v, rows), jax.device_put(t, rows)
    assert len(sv.addressable_shards) == 8 and sv.addressable_shards[0].data.shape == (2, d)
    loss, grads = jax.jit(grad_fn)(jax.device_put(w, rep), sv, st, jax.device_put(scale, rep))
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=2e-5, atol=1e-6)


def test_a_per_device_loss_would_fail_the_check():
    """The same loss computed per device (negatives = the 2 local examples) differs: the test
    above can tell a global-batch loss from a local one."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(16, 12)).astype(np.float32)
    t = rng.normal(size=(16, 12)).astype(np.float32)
    scale = np.log(1 / 0.07)
    local = np.mean([_numpy_clip_loss(v[i:i + 2], t[i:i + 2], scale) for i in range(0, 16, 2)])
    global_ = _numpy_clip_loss(v, t, scale)
    assert abs(local - global_) > 0.5, (local, global_)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))

    @jax.jit
    @jax.shard_map(mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
    def per_device(v, t):
        return jax.lax.pmean(losses.contrastive_loss(v, t, jnp.float32(scale))[0], "data")

    rows = NamedSharding(mesh, P("data"))
    loss = per_device(jax.device_put(v, rows), jax.device_put(t, rows))
    np.testing.assert_allclose(float(loss), local, rtol=1e-5)


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_hard_negatives_join_only_their_own_videos_video_to_text_softmax():
    rng = np.random.default_rng(4)
    b, k, e = 5, 3, 8
    v, t = rng.normal(size=(b, e)), rng.normal(size=(b, e))
    n = rng.normal(size=(b, k, e))
    scale_log = np.float32(np.log(20.0))
    loss, logits = losses.contrastive_loss(jnp.asarray(v), jnp.asarray(t), jnp.asarray(scale_log),
                                           jnp.asarray(n))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    vn, tn, nn_ = unit(v), unit(t), unit(n)
    sim = 20.0 * vn @ tn.T  # (B, B)
    v2t = []
    for i in range(b):  # row i: the batch's texts, then video i's own negatives
        row = np.concatenate([sim[i], [20.0 * vn[i] @ nn_[i, j] for j in range(k)]])
        v2t.append(-_log_softmax(row)[i])
    t2v = [-_log_softmax(sim[:, i])[i] for i in range(b)]
    np.testing.assert_allclose(float(loss), (np.mean(v2t) + np.mean(t2v)) / 2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), sim, rtol=1e-5)
    # extra columns in the video->text softmax can only raise the loss
    plain, _ = losses.contrastive_loss(jnp.asarray(v), jnp.asarray(t), jnp.asarray(scale_log))
    assert float(loss) > float(plain)
