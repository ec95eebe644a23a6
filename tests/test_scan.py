"""Scanned layers (model.scan_layers): one traced block run `depth` times, parameters stacked under
'blocks' with a leading 'layers' axis. Checked against the per-layer model with the same weights:
outputs, gradients, one optimizer step with layer decay and no decay on 1-D parameters; the layout
conversion both ways, through checkpoints and the converter."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from internvideo_jax.infra import sharding
from internvideo_jax.training import optim
from internvideo_jax.convert.common import flatten
from internvideo_jax.models import layers, videomae

SIZE = videomae.SIZES["tiny"]


def _inputs(model):
    video = jax.random.normal(jax.random.key(0), (2, 8, 32, 32, 3))  # 4 x 4 x 4 tokens
    m = model.num_masked(video.shape)
    rng = np.random.default_rng(0)
    mask = np.zeros((2, 64), bool)
    for row in mask:
        row[rng.permutation(64)[:m]] = True
    return video, jnp.asarray(mask)


def test_scanned_pretrain_equals_per_layer_model():
    per_layer = videomae.VideoMAEPretrain(SIZE, drop_path_rate=0.1)
    scanned = videomae.VideoMAEPretrain(SIZE, drop_path_rate=0.1, scan=True)
    video, mask = _inputs(per_layer)
    boxed = jax.eval_shape(scanned.init, jax.random.key(1), video, mask)
    spec = nn.get_partition_spec(boxed)["params"]["encoder"]["transformer"]["blocks"]["block"]
    assert spec["attn"]["qkv"]["kernel"] == jax.sharding.PartitionSpec(
        "layers", "embed", "qkv", "heads", "kv")  # 'layers' -> None in the rules table
    assert dict(sharding.RULES)["layers"] is None
    params = jax.device_get(nn.meta.unbox(jax.jit(per_layer.init)(jax.random.key(1), video,
                                                                  mask)))
    stacked = layers.stack_layers(params)
    assert jax.tree.structure(stacked) == jax.tree.structure(nn.meta.unbox(boxed))
    qkv = stacked["params"]["encoder"]["transformer"]["blocks"]["block"]["attn"]["qkv"]["kernel"]
    assert qkv.shape == (SIZE.depth, 128, 3, 4, 32)
    back = layers.unstack_layers(stacked)
    for p, v in flatten(params).items():
        np.testing.assert_array_equal(flatten(back)[p], v)

    def loss(p, model):
        return jnp.mean(model.apply(p, video, mask) ** 2)

    with jax.default_matmul_precision("highest"):  # forward (the loss) and backward, one compile
        l_layer, g_layer = jax.value_and_grad(loss)(params, per_layer)
        l_scan, g_scan = jax.device_get(jax.value_and_grad(loss)(stacked, scanned))
    np.testing.assert_allclose(l_scan, l_layer, rtol=1e-6)
    g_layer = layers.stack_layers(jax.device_get(g_layer))
    # float32 round-off of reductions fused in another order: relative to each tensor's scale
    for p, g in flatten(g_layer).items():
        err = np.abs(flatten(g_scan)[p] - g).max() / np.abs(g).max()
        assert err < 1e-5, ("/".join(p), err)
    # drop path still acts inside the scan (rates 0..0.9 over the layers)
    noisy = videomae.VideoMAEPretrain(SIZE, drop_path_rate=0.9, scan=True)
    outs = [noisy.apply(stacked, video, mask, deterministic=False,
                        rngs={"dropout": jax.random.key(s)}) for s in range(2)]
    assert np.abs(np.asarray(outs[0]) - np.asarray(outs[1])).max() > 1e-2


def test_layer_decay_and_weight_decay_follow_the_layers():
    """The optimizer sees a stacked leaf as `depth` layers: layer-decay scale k for slice k, and
    no weight decay on stacked 1-D parameters (biases, norms). One AdamW + layer-decay step from
    the same weights gives the same parameters in both layouts."""
    per_layer = videomae.VideoMAEClassifier(SIZE, 5)
    scanned = videomae.VideoMAEClassifier(SIZE, 5, scan=True)
    video = jax.random.normal(jax.random.key(0), (2, 8, 32, 32, 3))
    params = jax.device_get(nn.meta.unbox(per_layer.init(jax.random.key(1), video)))["params"]
    stacked = layers.stack_layers(params)
    scales_layer = layers.stack_layers(optim.layer_decay_scales(params, 0.75))
    scales_scan = optim.layer_decay_scales(stacked, 0.75)
    for p, s in flatten(scales_layer).items():
        np.testing.assert_allclose(np.ravel(flatten(scales_scan)[p]), np.ravel(s), rtol=1e-6,
                                   err_msg="/".join(p))
    mask_scan = flatten(optim.decay_mask(stacked))
    for p, per_layer_mask in flatten(layers.stack_layers(optim.decay_mask(params))).items():
        assert np.all(per_layer_mask == mask_scan[p]), "/".join(p)  # e.g. norm scales: False
    assert not mask_scan[("encoder", "transformer", "blocks", "block", "norm1", "scale")]

    tx_layer = optax.chain(optim.adamw(1e-3, 0.9, 0.999, 1e-8, 0.05),
                           optim.scale_updates(optim.layer_decay_scales(params, 0.75)))
    tx_scan = optax.chain(optim.adamw(1e-3, 0.9, 0.999, 1e-8, 0.05),
                          optim.scale_updates(optim.layer_decay_scales(stacked, 0.75)))
    labels = jnp.array([1, 3])

    def loss(p, model):
        logits = model.apply({"params": p}, video)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    with jax.default_matmul_precision("highest"):
        results = []
        for tx, p, model in ((tx_layer, params, per_layer), (tx_scan, stacked, scanned)):
            updates, _ = tx.update(jax.grad(loss)(p, model), tx.init(p), p)
            results.append(jax.device_get(optax.apply_updates(p, updates)))
    for p, v in flatten(layers.stack_layers(results[0])).items():
        np.testing.assert_allclose(flatten(results[1])[p], v, rtol=1e-5, atol=1e-6,
                                   err_msg="/".join(p))


def test_checkpoints_and_converter_convert_the_layout(tmp_path):
    """A scanned checkpoint loads per-layer (and back) by request, and exports to the official
    .pth layout exactly as the per-layer one does."""
    torch = __import__("pytest").importorskip("torch")
    from internvideo_jax.training.checkpointing import load_params
    from internvideo_jax.convert.__main__ import as_jax_arrays, main, save_params
    model = videomae.VideoMAEPretrain(SIZE)
    video, mask = _inputs(model)
    params = jax.device_get(nn.meta.unbox(model.init(jax.random.key(1), video, mask)))["params"]
    save_params(as_jax_arrays(layers.stack_layers(params)), str(tmp_path / "scanned"))
    as_layers, _ = load_params(str(tmp_path / "scanned"), scanned=False)
    for p, v in flatten(params).items():
        np.testing.assert_array_equal(flatten(as_layers)[p], v)
    as_stored, _ = load_params(str(tmp_path / "scanned"))
    assert layers.is_scanned(as_stored)
    main(["export", "--src", str(tmp_path / "scanned"), "--to", "pth", "--out",
          str(tmp_path / "x.pth")])
    exported = torch.load(tmp_path / "x.pth")["model"]
    assert "encoder.blocks.3.attn.q_bias" in exported
    main(["import", "--src", str(tmp_path / "x.pth"), "--model", "videomae_pretrain", "--size",
          "tiny", "--frames", "8", "--image-size", "32", "--out", str(tmp_path / "back")])
    again, _ = load_params(str(tmp_path / "back"), scanned=True)
    for p, v in flatten(layers.stack_layers(params)).items():
        np.testing.assert_array_equal(flatten(again)[p], v)


# ---- CLIP / UniFormerV2 / multimodal: 'resblocks' stacks ------------------------------------

def _max_rel_err(got: dict, want: dict) -> dict:
    """Per-tensor max |got - want| / max |want| over two flattened trees of the same paths."""
    got = flatten(got)
    return {"/".join(p): float(np.abs(got[p] - w).max() / max(np.abs(w).max(), 1e-30))
            for p, w in flatten(want).items()}


def test_scanned_uniformerv2_equals_per_layer_model():
    """Local UniBlocks (BatchNorm state), temporal downsampling, global UniBlocks on the last two
    layers: logits, every gradient, and the BatchNorm statistics of a training step agree with
    the per-layer model; the global UniBlocks read the scanned layers' outputs."""
    from internvideo_jax.models import uniformerv2
    size = uniformerv2.SIZES["tiny"]  # 4 layers, global UniBlocks after layers 2 and 3
    kw = dict(temporal_kernel=3, temporal_stride=2, local=True)
    per_layer = uniformerv2.UniFormerV2Classifier(size, 5, **kw)
    scanned = uniformerv2.UniFormerV2Classifier(size, 5, scan=True, **kw)
    video = jax.random.normal(jax.random.key(0), (2, 8, 64, 64, 3))
    variables = jax.device_get(nn.meta.unbox(per_layer.init(jax.random.key(1), video)))
    boxed = jax.eval_shape(scanned.init, jax.random.key(1), video)
    spec = nn.get_partition_spec(boxed)["params"]["backbone"]["resblocks"]["block"]
    assert spec["attn"]["in_proj_kernel"] == jax.sharding.PartitionSpec(
        "layers", "embed", "qkv", "heads", "kv")
    stacked = layers.stack_layers(variables)
    assert jax.tree.structure(stacked) == jax.tree.structure(nn.meta.unbox(boxed))
    assert stacked["batch_stats"]["backbone"]["resblocks"]["block"]["lmhra1"]["bn"]["mean"].shape \
        == (size.layers, size.width)
    # the layout converts back exactly
    for p, v in flatten(layers.unstack_layers(stacked)).items():
        np.testing.assert_array_equal(flatten(variables)[p], v)
    # a perturbation that makes every block (and the BatchNorm running stats) matter: the
    # zero-initialised local and global branches would otherwise hide a wrong wiring
    rng = np.random.default_rng(0)
    variables["params"] = jax.tree.map(
        lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype), variables["params"])
    stacked = layers.stack_layers(variables)
    labels = jnp.array([1, 3])

    def loss(params, model, state):
        logits = model.apply({"params": params, **state}, video)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    state = {"batch_stats": variables["batch_stats"]}
    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)  # compiled, not op by op
    with jax.default_matmul_precision("highest"):
        l_layer, g_layer = value_and_grad(variables["params"], per_layer, state)
        l_scan, g_scan = value_and_grad(stacked["params"], scanned,
                                        {"batch_stats": stacked["batch_stats"]})
        # training mode: batch statistics used and the running averages updated
        train = [jax.jit(lambda v, m=m: m.apply(v, video, deterministic=False,
                                                mutable=["batch_stats"],
                                                rngs={"dropout": jax.random.key(2)}))(v)
                 for m, v in ((per_layer, variables), (scanned, stacked))]
    np.testing.assert_allclose(float(l_scan), float(l_layer), rtol=1e-6)
    errors = _max_rel_err(jax.device_get(g_scan), layers.stack_layers(jax.device_get(g_layer)))
    assert max(errors.values()) < 1e-5, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    np.testing.assert_allclose(np.asarray(train[1][0]), np.asarray(train[0][0]), rtol=1e-5,
                               atol=1e-6)
    errors = _max_rel_err(jax.device_get(train[1][1]),
                          layers.stack_layers(jax.device_get(train[0][1])))
    assert max(errors.values()) < 1e-5, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    # drop path still acts per layer inside the scan
    noisy = uniformerv2.UniFormerV2Classifier(size, 5, scan=True, backbone_drop_path_rate=0.9,
                                              **kw)
    outs = [noisy.apply(stacked, video, deterministic=False, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.key(s)})[0] for s in range(2)]
    assert np.abs(np.asarray(outs[0]) - np.asarray(outs[1])).max() > 1e-3


def test_scanned_multimodal_model_equals_per_layer_model(tmp_path):
    """Video tower and text encoder scanned: the features, logit scale, caption logits and the
    gradients of a loss over all of them equal the per-layer model's. A per-layer checkpoint (the
    converter's layout) loads into the scanned model, and the weight-decay mask is the
    per-layer one stacked."""
    from internvideo_jax.training.checkpointing import load_params
    from internvideo_jax.convert.__main__ import as_jax_arrays, save_params
    from internvideo_jax.models import multimodal
    size = multimodal.SIZES["tiny"]
    per_layer = multimodal.VideoTextModel(size)
    scanned = multimodal.VideoTextModel(size, scan=True)
    video = jax.random.normal(jax.random.key(0), (2, 4, 64, 64, 3))
    ids = jax.random.randint(jax.random.key(2), (2, 77), 0, 49408)
    params = jax.device_get(nn.meta.unbox(per_layer.init(jax.random.key(1), video, ids)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype),
                          params)
    save_params(as_jax_arrays(params), str(tmp_path / "per_layer"))
    stacked, _ = load_params(str(tmp_path / "per_layer"), scanned=True)
    boxed = jax.eval_shape(scanned.init, jax.random.key(1), video, ids)
    assert jax.tree.structure(stacked) == jax.tree.structure(nn.meta.unbox(boxed)["params"])
    assert stacked["textual"]["resblocks"]["block"]["attn"]["in_proj_kernel"].shape[0] == \
        size.text.layers

    def loss(p, model):
        out = model.apply({"params": p}, video, ids)
        return (jnp.sum(out["video"] ** 2) + jnp.sum(out["text"] ** 2)
                + jnp.mean(out["caption_logits"] ** 2) * out["logit_scale"])

    grad = jax.jit(jax.grad(loss), static_argnums=1)  # compiled: op-by-op took most of the test
    with jax.default_matmul_precision("highest"):
        outs = [jax.jit(m.apply)({"params": p}, video, ids)
                for m, p in ((per_layer, params), (scanned, stacked))]
        g_layer = grad(params, per_layer)
        g_scan = grad(stacked, scanned)
    for k, v in outs[0].items():
        np.testing.assert_allclose(np.asarray(outs[1][k]), np.asarray(v), rtol=1e-5, atol=1e-5,
                                   err_msg=k)
    errors = _max_rel_err(jax.device_get(g_scan), layers.stack_layers(jax.device_get(g_layer)))
    stacks = {p: e for p, e in errors.items() if "/resblocks/" in p}
    assert len(stacks) > 20
    assert max(stacks.values()) < 1e-5, max(stacks.items(), key=lambda kv: kv[1])
    # The caption decoder's cross-attention query kernels get a gradient with heavy cancellation:
    # against a float64 run (LayerNorms still float32) the per-layer model itself is off by
    # 1.6e-5 of their largest entry, the scanned one by 1.3e-5. Everything else is below 2e-6.
    assert max(errors.values()) < 5e-5, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    mask_scan = flatten(optim.decay_mask(stacked))
    for p, per_layer_mask in flatten(layers.stack_layers(optim.decay_mask(params))).items():
        assert np.all(per_layer_mask == mask_scan[p]), "/".join(p)
    assert not mask_scan[("textual", "resblocks", "block", "attn", "in_proj_bias")]
    assert mask_scan[("textual", "resblocks", "block", "attn", "in_proj_kernel")]
