"""Weight-decay groups and the lr schedule against the reference's rules, computed independently."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internvideo_jax.training import optim
from internvideo_jax.models import videomae


def test_no_decay_on_biases_norms_and_mask_token():
    s = videomae.VideoMAESize(dim=16, depth=1, heads=2, decoder_dim=8, decoder_heads=2,
                              decoder_depth=1, patch=4)
    model = videomae.VideoMAEPretrain(s, 0.5)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2, 8, 8, 3)), jnp.zeros((1, 4), bool))
    mask = optim.decay_mask(params["params"])
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    # The reference: no decay when 1-D in torch (biases, norms, q_bias, v_bias) or in the skip list.
    expected_no_decay = {k for k in flat if k.endswith(("bias", "scale")) or k == "mask_token"}
    assert {k for k, v in flat.items() if not v} == expected_no_decay
    assert flat["encoder/transformer/blocks_0/attn/qkv/kernel"]
    assert not flat["encoder/transformer/blocks_0/attn/q_bias"]
    assert flat["encoder_to_decoder/kernel"]


def test_warmup_then_cosine_to_min_lr():
    peak, min_lr, warmup, total = 1e-3, 1e-5, 10, 110
    sched = optim.warmup_cosine(peak, min_lr, warmup, total)
    for step in range(total):
        if step < warmup:
            expected = peak * step / warmup
        else:
            expected = min_lr + 0.5 * (peak - min_lr) * (
                1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        np.testing.assert_allclose(float(sched(step)), expected, rtol=1e-5, atol=1e-9)


def test_lr_scaling_rule():
    assert optim.scaled_lr(1.5e-4, 2048) == 1.5e-4 * 8


def test_layer_decay_table_for_vit_b_equals_the_reference_rule():
    """ViT-B (12 blocks), decay 0.75: scale = 0.75^(13 - layer_id), layer ids as the reference's
    get_num_layer_for_vit, written out here from its definition on the PyTorch names."""
    model = videomae.VideoMAEClassifier(videomae.SIZES["B"], 400)
    params = nn.meta.unbox(jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)))
    scales = optim.layer_decay_scales(params["params"], 0.75)
    from internvideo_jax.convert.videomae import official_rules
    by_torch_name = {}
    flat_scales = {tuple(getattr(k, "key", k) for k in p): v
                   for p, v in jax.tree_util.tree_leaves_with_path(scales)}
    for rule in official_rules(params["params"]):
        by_torch_name[rule.key] = flat_scales[rule.path]

    def reference_layer_id(name: str) -> int:  # num_max_layer = 12 + 2
        if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks"):
            return int(name.split(".")[1]) + 1
        return 13

    assert len(by_torch_name) == 12 * 13 + 2 + 4  # 13 tensors a block, patch embed, fc_norm, head
    for name, scale in by_torch_name.items():
        assert scale == 0.75 ** (13 - reference_layer_id(name)), name
    assert by_torch_name["patch_embed.proj.weight"] == 0.75 ** 13
    assert by_torch_name["blocks.11.mlp.fc2.bias"] == 0.75
    assert by_torch_name["head.weight"] == 1.0


def test_layer_decay_refuses_a_tree_without_encoder_blocks():
    """No `blocks_i` (or scanned blocks/block) under an 'encoder' path: with layer_decay != 1
    the ids would be wrong (here decoder blocks_1 would get 0.75^-1 > 1), so it is refused by
    name; layer_decay=1.0 stays allowed (all ones)."""
    w = np.zeros((2, 2), np.float32)
    trees = [
        {"decoder": {"blocks_0": {"kernel": w}, "blocks_1": {"kernel": w}}, "head": {"kernel": w}},
        {"encoder": {"resblocks_0": {"kernel": w}, "resblocks_1": {"kernel": w}}},  # UniFormerV2
        {"encoder": {"resblocks": {"block": {"kernel": np.zeros((3, 2, 2), np.float32)}}}},
    ]
    for tree in trees:
        with pytest.raises(ValueError, match="found no encoder layers") as err:
            optim.layer_decay_scales(tree, 0.75)
        message = str(err.value)
        assert "blocks_0, blocks_1" in message and "'blocks/block'" in message
        assert "'encoder'" in message and "layer_decay must be 1.0 for this model" in message
        assert all(np.all(np.asarray(s) == 1.0)
                   for s in jax.tree.leaves(optim.layer_decay_scales(tree, 1.0)))
    # encoder blocks present, but a deeper stack elsewhere: multipliers > 1, refused too
    deeper = {"encoder": {"blocks_0": {"kernel": w}},  # L = 1: decoder blocks_2 has id 3 > L + 1
              "decoder": {f"blocks_{i}": {"kernel": w} for i in range(3)}}
    with pytest.raises(ValueError, match="multipliers > 1"):
        optim.layer_decay_scales(deeper, 0.75)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        optim.layer_decay_scales({"encoder": {"blocks_0": {"kernel": w}}}, 1.5)


def test_layer_names_round_trip():
    """models/naming.py: `{stack}_{i}` for stack in ('blocks', 'resblocks'), by hand values."""
    from internvideo_jax.models import layers, naming
    assert naming.STACKS == ("blocks", "resblocks") and naming.SCANNED == "blocks"
    assert layers.STACKS == naming.STACKS and layers.SCANNED == naming.SCANNED  # re-exported
    for stack, i, name in (("blocks", 0, "blocks_0"), ("blocks", 11, "blocks_11"),
                           ("resblocks", 3, "resblocks_3"), ("resblocks", 23, "resblocks_23")):
        assert naming.layer_name(stack, i) == name
        assert naming.parse_layer(name) == (stack, i)
    for name in ("blocks", "blocks_", "blocks_01", "blocks_x", "dec_0", "dpe_1", "blocks_1_2",
                 "decoder_blocks_0", "resblocks", "block", "head"):
        assert naming.parse_layer(name) is None, name
    for stack, i in (("dec", 0), ("blocks", -1), ("blocks", True), ("blocks", 1.0)):
        with pytest.raises(ValueError):
            naming.layer_name(stack, i)
    assert naming.is_stacked_path(("encoder", "transformer", "blocks", "block", "mlp", "kernel"))
    assert naming.stacked_stack(("encoder", "resblocks", "block", "ln_1", "scale")) == "resblocks"
    assert not naming.is_stacked_path(("encoder", "transformer", "blocks_0", "mlp", "kernel"))
