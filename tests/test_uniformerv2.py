"""UniFormerV2 / CLIP text / caption decoder: shapes and parameter counts of every preset
(eval_shape, hand formulas), the convolutions against lax.conv, and UniBlock behaviour."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internvideo_jax.models import caption_decoder, clip, multimodal, uniformerv2 as u


def _count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _abstract_init(module, *args):
    return jax.eval_shape(lambda r: nn.meta.unbox(module.init(r, *args)), jax.random.key(0))


@pytest.mark.parametrize("name,frames,local,kt,classes,published", [
    ("B/16", 8, False, 3, 400, 115e6),    # UniFormerV2-B/16 (K400): 115M
    ("L/14", 16, False, 3, 400, 354e6),   # UniFormerV2-L/14 (K400): 354M
    ("L/14@336", 32, False, 3, 400, None),
    ("B/16", 16, True, 3, 174, None),     # SSv2 configs add local UniBlocks
    ("tiny", 8, True, 1, 8, None),
])
def test_classifier_presets_shapes_and_counts(name, frames, local, kt, classes, published):
    s = u.get_size(name)
    model = u.UniFormerV2Classifier(s, classes, temporal_kernel=kt, temporal_stride=2 if kt == 3
                                    else 1, local=local)
    video = jax.ShapeDtypeStruct((2, frames, s.image_size, s.image_size, 3), jnp.float32)
    variables = _abstract_init(model, jnp.zeros(video.shape, video.dtype))
    logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                            jnp.zeros(video.shape, video.dtype))
    assert logits.shape == (2, classes)
    backbone = _count(variables["params"]["backbone"])
    assert backbone == u.encoder_param_count(s, local, kt)
    assert ("batch_stats" in variables) == local
    total = _count(variables["params"])
    assert total == backbone + 2 * s.width + s.width * classes + classes
    if published:
        assert abs(total - published) / published < 0.01, total


def test_text_and_decoder_presets():
    for name, size in clip.TEXT_SIZES.items():
        v = _abstract_init(clip.TextEncoder(size), jnp.zeros((2, 77), jnp.int32))
        assert _count(v["params"]) == clip.text_param_count(size), name
    # CLIP ViT-B/16's text tower (with its projection): 63.4M parameters
    assert abs(clip.text_param_count(clip.TEXT_SIZES["B/16"]) - 63.43e6) < 0.01e6
    for name in multimodal.SIZES:
        s = multimodal.get_size(name)
        model = multimodal.VideoTextModel(s)
        video = jnp.zeros((2, 8, s.video.image_size, s.video.image_size, 3))
        ids = jnp.zeros((2, 77), jnp.int32)
        out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), video, ids)[0])
        assert out["video"].shape == out["text"].shape == (2, s.video.embed_dim)
        assert out["caption_logits"].shape == (2, 76, 49408)
        image = jax.eval_shape(lambda: model.init_with_output(
            jax.random.key(0), video[:, :1], ids)[0])  # image-text: T = 1
        assert image["video"].shape == (2, s.video.embed_dim)


def test_temporal_patch_embed_equals_conv3d():
    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, 8, 16, 16, 3)).astype(np.float32)
    for k, s in ((1, 1), (3, 2), (3, 1)):
        kernel = rng.normal(size=(k, 4, 4, 3, 5)).astype(np.float32)
        ref = jax.lax.conv_general_dilated(video, kernel, (s, 4, 4), [((k - 1) // 2,) * 2, (0, 0),
                                                                       (0, 0)],
                                           dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
        got = u.temporal_patch_embed(jnp.asarray(video), jnp.asarray(kernel), s)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (3, 1, 1)])
def test_depthwise_conv_equals_grouped_conv(kernel_size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 5, 6, 7)).astype(np.float32)
    conv = u.DepthwiseConv3d(kernel_size)
    params = conv.init(jax.random.key(0), x)
    kernel = np.asarray(nn.meta.unbox(params)["params"]["kernel"])
    bias = rng.normal(size=7).astype(np.float32)
    params = {"params": {"kernel": kernel, "bias": bias}}
    ref = jax.lax.conv_general_dilated(
        x, kernel[..., None, :], (1, 1, 1), [(k // 2, k // 2) for k in kernel_size],
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=7) + bias
    np.testing.assert_allclose(conv.apply(params, x), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(kernel).max() <= 1 / np.sqrt(np.prod(kernel_size))  # PyTorch's default bound


def test_inflate_center():
    k2 = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    k3 = u.inflate_center(k2, 3)
    assert k3.shape == (3, 2, 2, 3, 4)
    np.testing.assert_array_equal(k3[1], k2)
    assert not k3[0].any() and not k3[2].any()
    # On a static video the inflated conv gives the 2-D conv of every frame.
    frame = np.random.default_rng(2).normal(size=(1, 1, 4, 4, 3)).astype(np.float32)
    video = np.repeat(frame, 4, axis=1)
    out = u.temporal_patch_embed(jnp.asarray(video), jnp.asarray(k3), 1)
    out2d = u.temporal_patch_embed(jnp.asarray(frame), jnp.asarray(k2[None]), 1)
    # float32 sums of ~50-sized terms: compare at 1e-4 absolute
    np.testing.assert_allclose(out[:, 1:3], np.repeat(out2d, 2, axis=1), rtol=1e-5, atol=1e-4)


def test_global_blocks_start_as_the_mean_cls_and_local_blocks_as_identity():
    """Zero-init out_proj/c_proj and query: at init the decoder leaves the query at zero, so the
    fused feature is sigmoid(0) * mean_t(CLS); local MHRA (zero last conv) adds nothing."""
    s = u.get_size("tiny")
    video = jax.random.normal(jax.random.key(3), (2, 4, 64, 64, 3))
    plain = u.UniFormerV2Encoder(s)
    params = plain.init(jax.random.key(4), video)
    fused, frames, _ = plain.apply(params, video)
    np.testing.assert_allclose(fused, 0.5 * frames[:, :, 0].mean(axis=1), rtol=1e-5, atol=1e-6)
    local = u.UniFormerV2Encoder(s, local=True)
    lparams = local.init(jax.random.key(4), video)
    shared = {k: v for k, v in nn.meta.unbox(lparams["params"]).items()}
    for i in range(s.layers):  # same backbone weights; the local blocks' outputs are zero
        for k in ("attn", "ln_1", "ln_2", "mlp"):
            shared[f"resblocks_{i}"][k] = nn.meta.unbox(params["params"])[f"resblocks_{i}"][k]
    for k in nn.meta.unbox(params["params"]):
        if not k.startswith("resblocks_"):
            shared[k] = nn.meta.unbox(params["params"])[k]
    out, _, _ = local.apply({"params": shared, "batch_stats": lparams["batch_stats"]}, video)
    np.testing.assert_allclose(out, fused, rtol=1e-5, atol=1e-6)


def test_local_mhra_batch_norm_train_and_eval():
    x = jax.random.normal(jax.random.key(5), (4, 3, 2, 2, 6)) * 3.0 + 1.0
    m = u.LocalMHRA()
    v = nn.meta.unbox(m.init(jax.random.key(6), x, deterministic=True))
    # the last conv starts at zero (output 0); give it weights so the output shows the BN
    v["params"]["conv_out"]["kernel"] = jax.random.normal(jax.random.key(7), (4, 6))
    # train: batch statistics, running averages move by momentum 0.1 (PyTorch's convention)
    _, updated = m.apply(v, x, deterministic=False, mutable=["batch_stats"])
    mean = np.asarray(x).reshape(-1, 6).mean(0)
    np.testing.assert_allclose(updated["batch_stats"]["bn"]["mean"], 0.1 * mean, rtol=1e-5)
    # eval: running statistics, output independent of the rest of the batch
    one = m.apply(v, x[:1], deterministic=True)
    full = m.apply(v, x, deterministic=True)[:1]
    np.testing.assert_allclose(one, full, rtol=1e-5, atol=1e-6)  # batch-size rounding only
    train_one = m.apply(v, x[:1], deterministic=False, mutable=["batch_stats"])[0]
    train_full = m.apply(v, x, deterministic=False, mutable=["batch_stats"])[0][:1]
    with pytest.raises(AssertionError):  # in training the batch statistics differ
        np.testing.assert_allclose(train_one, train_full, rtol=1e-6)


def test_text_encoder_is_causal_and_pools_at_eot():
    size = clip.TEXT_SIZES["tiny"]
    enc = clip.TextEncoder(size)
    ids = np.zeros((2, 77), np.int32)
    ids[:, :4] = [[49406, 320, 1125, 49407], [49406, 320, 1125, 49407]]
    ids[1, 3:6] = [2368, 530, 49407]  # a longer second text sharing the first 3 tokens
    params = enc.init(jax.random.key(0), ids)
    feats, tokens = enc.apply(params, ids, tokens=True)
    # causal: the first three positions see the same prefix in both rows
    np.testing.assert_allclose(tokens[0, :3], tokens[1, :3], rtol=1e-5, atol=1e-6)
    proj = nn.meta.unbox(params)["params"]["text_projection"]
    np.testing.assert_allclose(feats[0], tokens[0, 3] @ proj, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[1], tokens[1, 5] @ proj, rtol=1e-5, atol=1e-6)


def test_caption_decoder_is_causal_and_reads_the_video():
    size = caption_decoder.DECODER_SIZES["tiny"]
    dec = caption_decoder.CaptionDecoder(size)
    visual = jax.random.normal(jax.random.key(1), (1, 10, 32))
    text = jax.random.normal(jax.random.key(2), (1, 6, 64))  # the text encoder's tokens
    params = dec.init(jax.random.key(2), visual, text)
    logits = dec.apply(params, visual, text)
    changed = text.at[0, 3].set(jax.random.normal(jax.random.key(4), (64,)))
    logits2 = dec.apply(params, visual, changed)
    np.testing.assert_allclose(logits[0, :3], logits2[0, :3], rtol=1e-5, atol=1e-5)
    assert np.abs(logits[0, 3:] - logits2[0, 3:]).max() > 1e-4
    logits3 = dec.apply(params, jax.random.normal(jax.random.key(3), visual.shape), text)
    assert np.abs(logits3 - logits).max() > 1e-4
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == caption_decoder.param_count(size, width=64, vision_width=32)


def test_caption_loss_ignores_padding_by_hand():
    from internvideo_jax.training import losses
    logits = np.zeros((1, 3, 4), np.float32)
    logits[0, 0, 2] = np.log(3.0)  # p(target 2) = 3 / 6
    ids = np.array([[1, 2, 3, 0]])  # targets 2, 3, pad
    # position 0: p(2) = 3 / (3 + 1 + 1 + 1) = 0.5; position 1: zero logits, p(3) = 1/4;
    # position 2's target is padding: left out of the mean.
    expected = (-np.log(0.5) - np.log(0.25)) / 2
    np.testing.assert_allclose(float(losses.caption_loss(jnp.asarray(logits), jnp.asarray(ids))),
                               expected, rtol=1e-6)


def test_remat_keeps_gradients_and_batch_statistics_and_saves_residuals():
    """remat='full' on the backbone layers (local UniBlocks with BatchNorm in training mode): the
    same loss gradients and updated running statistics as no remat, fewer saved residuals."""
    from jax._src.ad_checkpoint import saved_residuals
    size = u.SIZES["tiny"]
    video = jax.random.normal(jax.random.key(0), (2, 4, 64, 64, 3))
    out = {}
    for policy in ("none", "full"):
        model = u.UniFormerV2Classifier(size, 5, local=True, remat=policy)
        variables = nn.meta.unbox(model.init(jax.random.key(1), video))

        def loss(params):
            logits, state = model.apply({**variables, "params": params}, video,
                                        deterministic=False, rngs={"dropout": jax.random.key(2)},
                                        mutable=["batch_stats"])
            return jnp.sum(logits ** 2), state

        (_, state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
        saved = sum(int(np.prod(a.shape)) * a.dtype.itemsize
                    for a, _ in saved_residuals(lambda p: loss(p)[0], variables["params"]))
        out[policy] = (jax.device_get(grads), jax.device_get(state), saved)
    for a, b in zip(jax.tree.leaves(out["full"][:2]), jax.tree.leaves(out["none"][:2])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert out["full"][2] < 0.5 * out["none"][2], (out["full"][2], out["none"][2])


def test_text_encoder_remat_keeps_gradients_and_saves_residuals():
    """remat='full' on the text encoder's blocks (per layer and scanned): the gradients of the
    unrematerialised per-layer encoder, and less kept for the backward pass."""
    from jax._src.ad_checkpoint import saved_residuals
    from internvideo_jax.models import layers
    size = clip.TEXT_SIZES["tiny"]
    ids = jax.random.randint(jax.random.key(0), (3, 77), 1, 400)
    reference = clip.TextEncoder(size)
    params = nn.meta.unbox(reference.init(jax.random.key(1), ids))["params"]

    def loss_of(model, p):
        features, tokens = model.apply({"params": p}, ids, tokens=True)
        return jnp.sum(features ** 2) + jnp.sum(jnp.tanh(tokens))

    expected = jax.jit(jax.grad(lambda p: loss_of(reference, p)))(params)
    saved = {}
    for scan in (False, True):
        model = clip.TextEncoder(size, scan=scan, remat="full")
        p = layers.stack_layers(params) if scan else params
        grads = jax.jit(jax.grad(lambda q: loss_of(model, q)))(p)
        got = layers.unstack_layers(grads) if scan else grads
        assert jax.tree.structure(got) == jax.tree.structure(expected)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            # float32 sums in another order: errors scale with the gradient's largest entries
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
    for policy in ("none", "full"):
        model = clip.TextEncoder(size, remat=policy)
        saved[policy] = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a, _ in
                            saved_residuals(lambda q: loss_of(model, q), params))
    assert saved["full"] < 0.5 * saved["none"], saved


def test_caption_decoder_remat_keeps_gradients_and_saves_residuals():
    """remat='full' on the caption decoder's causal and cross blocks: the gradients (parameters
    and both inputs) of the unrematerialised decoder, and less kept for the backward pass.

    Gradients match to 1e-6 of each leaf's largest entry, except where float32 itself is that
    loose: the cross-attention queries' gradients cancel (one shared key/value head over similar
    pooled tokens), and the same unrematerialised decoder run op by op (eager) already differs
    from its jitted self by ~3e-4 there. So the bound per leaf is the larger of 1e-6 and twice
    that eager-vs-jit difference."""
    from jax._src.ad_checkpoint import saved_residuals
    # A 64-word vocabulary, so that the blocks (what remat acts on) hold most of the residuals,
    # not the (B, L, vocab) logits.
    size = dataclasses.replace(caption_decoder.DECODER_SIZES["tiny"], vocab_size=64)
    visual = jax.random.normal(jax.random.key(0), (2, 40, 48))  # (B, M, Cv)
    text = jax.random.normal(jax.random.key(1), (2, 12, 64))  # (B, L, D)
    params = nn.meta.unbox(caption_decoder.CaptionDecoder(size).init(
        jax.random.key(2), visual, text))["params"]

    def loss_of(policy):
        model = caption_decoder.CaptionDecoder(size, remat=policy)
        return lambda p, v, t: jnp.sum(jnp.tanh(model.apply({"params": p}, v, t)))

    expected = jax.jit(jax.grad(loss_of("none"), (0, 1, 2)))(params, visual, text)
    eager = jax.grad(loss_of("none"), (0, 1, 2))(params, visual, text)
    got = jax.jit(jax.grad(loss_of("full"), (0, 1, 2)))(params, visual, text)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for (path, a), b, c in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected),
                               jax.tree.leaves(eager)):
        scale = np.abs(b).max()
        bound = max(1e-6, 2 * np.abs(c - b).max() / scale)
        error = np.abs(a - b).max() / scale
        assert error <= bound, f"{jax.tree_util.keystr(path)}: {error:.1e} > {bound:.1e}"
    saved = {policy: sum(int(np.prod(a.shape)) * a.dtype.itemsize  # activations, not weights
                         for a, source in saved_residuals(loss_of(policy), params, visual, text)
                         if not source.startswith("from the argument"))
             for policy in ("none", "full")}
    assert saved["full"] < 0.5 * saved["none"], saved
