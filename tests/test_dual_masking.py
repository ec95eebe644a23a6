"""VideoMAE V2 dual masking: the running cell decoder mask, the model's decoder on the decoded
subset, the loss on the masked tokens among them, the pipeline, the task's FLOPs, and parity with
an independent PyTorch model of OpenGVLab/VideoMAEv2's PretrainVisionTransformer."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from input_pipelines import builders, masking
from internvideo_jax.infra import flops
from internvideo_jax.models import layers, videomae
from internvideo_jax.training import losses


# ---- the running cell mask against the reference rule, written out independently ---------------
def reference_running_cell(grid, ratio, start):
    """RunningCellMaskingGenerator as its source reads (dataset/masking_generator.py): a queue of
    int(4r) ones then zeros; per frame the pointer first advances one cell, then the queue is read
    from the pointer (cyclically), reshaped 2x2 and tiled over (H/2, W/2)."""
    t, h, w = grid
    m = int(4 * ratio)
    queue = np.array([1.0] * m + [0.0] * (4 - m))
    ptr = start
    frames = []
    for _ in range(t):
        ptr += 1
        unit = queue[(np.arange(4) + ptr) % 4].reshape(2, 2)
        frames.append(np.tile(unit, (h // 2, w // 2)).flatten())
    return np.stack(frames).astype(bool).reshape(-1)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("grid", [(8, 14, 14), (3, 4, 6), (8, 16, 16)])
def test_running_cell_mask_equals_the_reference_rule(grid, ratio):
    for start in range(4):
        got = masking.running_cell_mask(grid, ratio, start=start)
        np.testing.assert_array_equal(got, reference_running_cell(grid, ratio, start))
        t, h, w = grid
        hidden_per_slice = got.reshape(t, h * w).sum(axis=1)
        assert (hidden_per_slice == (h // 2) * (w // 2) * int(4 * ratio)).all()
        assert (~got).sum() == masking.num_decoded(grid, ratio)


def test_running_cell_pattern_moves_one_cell_per_slice_and_starts_at_random():
    mask = masking.running_cell_mask((4, 2, 2), 0.5, start=0).reshape(4, 4)
    # start 0: slice t reads the queue [1, 1, 0, 0] from t + 1
    np.testing.assert_array_equal(mask.astype(int), [[1, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0],
                                                     [1, 1, 0, 0]])
    rng = np.random.default_rng(0)
    seen = {masking.running_cell_mask((2, 4, 4), 0.5, rng).tobytes() for _ in range(64)}
    assert len(seen) == 4  # the 4 pointer starts, drawn uniformly
    a = masking.running_cell_mask((2, 4, 4), 0.5, np.random.default_rng(3))
    b = masking.running_cell_mask((2, 4, 4), 0.5, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_running_cell_mask_refuses_odd_grids_and_empty_ratios():
    with pytest.raises(ValueError, match="even number of tokens per side"):
        masking.running_cell_mask((2, 7, 8), 0.5, start=0)
    with pytest.raises(ValueError, match=r"0 < int\(4 \* ratio\) < 4"):
        masking.num_decoded((2, 4, 4), 0.2)
    with pytest.raises(ValueError, match=r"0 < int\(4 \* ratio\) < 4"):
        masking.running_cell_mask((2, 4, 4), 1.0, start=0)


# ---- the loss ----------------------------------------------------------------------------------
def _masks(batch, grid, ratio, rng):
    mask = np.stack([masking.tube_mask(grid, ratio, rng) for _ in range(batch)])
    decoder_mask = np.stack([masking.running_cell_mask(grid, 0.5, rng) for _ in range(batch)])
    return mask, decoder_mask


def test_dual_loss_is_the_mean_over_the_masked_decoded_tokens():
    rng = np.random.default_rng(0)
    grid, p = (3, 4, 4), 12
    n = int(np.prod(grid))
    mask, decoder_mask = _masks(3, grid, 0.75, rng)
    d = masking.num_decoded(grid, 0.5)
    pred = rng.normal(size=(3, d, p)).astype(np.float32)
    target = rng.normal(size=(3, n, p)).astype(np.float32)
    got = float(losses.dual_masked_reconstruction_loss(pred, target, mask, decoder_mask))
    errors = []  # per token: mean over P of the squared error, on decoded & masked tokens only
    for b in range(3):
        decoded = np.flatnonzero(~decoder_mask[b])  # ascending: the order of pred's rows
        for row, token in enumerate(decoded):
            if mask[b, token]:
                errors.append(np.mean((pred[b, row] - target[b, token]) ** 2))
    assert len(errors) < 3 * d  # some decoded tokens are visible ones, out of the loss
    np.testing.assert_allclose(got, np.mean(errors), rtol=1e-6)


def test_dual_loss_restricted_to_the_masked_tokens_equals_the_v1_loss():
    """With the decoder mask = ~mask (every masked token decoded, nothing else) the dual loss is
    VideoMAE V1's: the full loss restricted to the same tokens."""
    rng = np.random.default_rng(1)
    grid, p = (2, 4, 4), 6
    mask = np.stack([masking.tube_mask(grid, 0.5, rng) for _ in range(2)])
    m = int(mask[0].sum())
    pred = rng.normal(size=(2, m, p)).astype(np.float32)
    target = rng.normal(size=(2, 32, p)).astype(np.float32)
    v1 = losses.masked_reconstruction_loss(pred, target, mask)
    v2 = losses.dual_masked_reconstruction_loss(pred, target, mask, ~mask)
    np.testing.assert_allclose(float(v2), float(v1), rtol=1e-6)


# ---- the model -----------------------------------------------------------------------------------
SIZE = videomae.VideoMAESize(dim=32, depth=2, heads=4, decoder_dim=16, decoder_heads=2,
                             decoder_depth=2, patch=8)
GRID = (2, 4, 4)  # 4 frames of 32x32


def _random_params(model, video, mask, decoder_mask=None, seed=0):
    params = nn.meta.unbox(model.init(jax.random.key(0), video, mask,
                                      decoder_mask=decoder_mask))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (rng.normal(size=a.shape) * 0.3).astype(np.float32), params)


def test_decoding_exactly_the_masked_tokens_is_v1_bit_for_bit():
    """The dual path with decoder_mask = ~mask (same count: a 0.5 tube mask and a 0.5 running
    cell on a 4x4 grid) runs the V1 decoder: identical predictions."""
    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    mask = np.stack([masking.tube_mask(GRID, 0.5, rng) for _ in range(2)])
    v1 = videomae.VideoMAEPretrain(SIZE, mask_ratio=0.5)
    v2 = videomae.VideoMAEPretrain(SIZE, mask_ratio=0.5, decoder_mask_ratio=0.5)
    params = _random_params(v1, video, mask)
    a = np.asarray(v1.apply({"params": params}, video, mask))
    b = np.asarray(v2.apply({"params": params}, video, mask, decoder_mask=~mask))
    c = np.asarray(v2.apply({"params": params}, video, mask))  # no decoder mask: V1
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_dual_decoder_predicts_each_decoded_position_from_its_own_sinusoid():
    """0 decoder blocks: prediction j = head(norm(mask_token + pe[decoded_j])) over the positions
    the running cell leaves, in ascending order, visible ones included (the reference's
    `~decode_mask`)."""
    s = videomae.VideoMAESize(dim=16, depth=1, heads=2, decoder_dim=8, decoder_heads=2,
                              decoder_depth=0, patch=8)
    model = videomae.VideoMAEPretrain(s, mask_ratio=0.75, decoder_mask_ratio=0.5)
    rng = np.random.default_rng(2)
    video = rng.normal(size=(1, 4, 32, 32, 3)).astype(np.float32)
    mask = masking.tube_mask(GRID, 0.75, rng)[None]
    decoder_mask = masking.running_cell_mask(GRID, 0.5, start=2)[None]
    params = _random_params(model, video, mask, decoder_mask)
    out = np.asarray(model.apply({"params": params}, video, mask, decoder_mask=decoder_mask))[0]
    decoded = np.flatnonzero(~decoder_mask[0])
    assert out.shape == (16, 3 * 2 * 8 * 8) and (~mask[0][decoded]).any()
    dec = params["decoder"]
    x = params["mask_token"][0] + layers.sinusoid_table(32, 8)[decoded]
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    x = (x - mu) / np.sqrt(var + 1e-6) * dec["norm"]["scale"] + dec["norm"]["bias"]
    np.testing.assert_allclose(out, x @ dec["head"]["kernel"] + dec["head"]["bias"], rtol=1e-4,
                               atol=1e-4)


def test_dual_model_equals_the_decoder_run_on_the_same_kept_tokens():
    """The decoder blocks see exactly [K visible, D decoded mask tokens]: our model equals its
    own parts (encoder, encoder_to_decoder, decoder) applied by hand to those tokens."""
    rng = np.random.default_rng(4)
    model = videomae.VideoMAEPretrain(SIZE, mask_ratio=0.75, decoder_mask_ratio=0.5)
    video = rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    mask, decoder_mask = _masks(2, GRID, 0.75, rng)
    params = _random_params(model, video, mask, decoder_mask)
    got = np.asarray(model.apply({"params": params}, video, mask, decoder_mask=decoder_mask))
    vis = np.stack([np.flatnonzero(~m) for m in mask])
    dec_idx = np.stack([np.flatnonzero(~m) for m in decoder_mask])
    enc = videomae.VideoMAEEncoder(SIZE)
    x = enc.apply({"params": params["encoder"]}, video, jnp.asarray(vis))
    x = x @ params["encoder_to_decoder"]["kernel"]
    pe = layers.sinusoid_table(32, 16)
    tokens = np.concatenate([np.asarray(x) + pe[vis], params["mask_token"] + pe[dec_idx]], axis=1)
    decoder = videomae.VideoMAEDecoder(SIZE, 3 * 2 * 8 * 8)
    want = decoder.apply({"params": params["decoder"]}, jnp.asarray(tokens), dec_idx.shape[1])
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_decoder_mask_with_another_count_is_refused_or_nan_under_jit():
    rng = np.random.default_rng(5)
    model = videomae.VideoMAEPretrain(SIZE, mask_ratio=0.75, decoder_mask_ratio=0.5)
    video = rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    mask, decoder_mask = _masks(2, GRID, 0.75, rng)
    params = _random_params(model, video, mask, decoder_mask)
    wrong = decoder_mask.copy()
    wrong[0, np.flatnonzero(~wrong[0])[0]] = True  # one position fewer decoded
    with pytest.raises(ValueError, match=r"the decoder mask hides 17 tokens in some rows, but "
                                         r"this VideoMAEPretrain \(decoder_mask_ratio=0.5\) "
                                         r"takes exactly 16"):
        model.apply({"params": params}, video, mask, decoder_mask=wrong)
    fn = jax.jit(lambda p, v, m, d: model.apply({"params": p}, v, m, decoder_mask=d))
    out, good = np.asarray(fn(params, video, mask, wrong)), np.asarray(
        fn(params, video, mask, decoder_mask))
    assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()
    np.testing.assert_allclose(out[1], good[1], rtol=1e-6)
    with pytest.raises(ValueError, match="decoder_mask_ratio=0"):
        videomae.VideoMAEPretrain(SIZE, mask_ratio=0.75).apply({"params": params}, video, mask,
                                                               decoder_mask=decoder_mask)


# ---- parity with the PyTorch reference model ---------------------------------------------------
def test_dual_masked_predictions_and_loss_match_the_pytorch_reference():
    torch = pytest.importorskip("torch")
    from input_pipelines import normalization
    from internvideo_jax.convert import videomae as cv
    from internvideo_jax.torch_models.videomae import VideoMAEPretrain as TorchPretrain
    # ViT-g's shape scaled down: width 44 (= 1408 / 32), MLP ratio 48/11, patch 7 (a 14 / 2).
    size = videomae.VideoMAESize(dim=44, depth=2, heads=4, decoder_dim=22, decoder_heads=2,
                                 decoder_depth=2, mlp_ratio=48 / 11, patch=7)
    frames, image, grid = 4, 28, (2, 4, 4)
    torch.manual_seed(0)
    ref = TorchPretrain(dim=44, depth=2, heads=4, decoder_dim=22, decoder_depth=2,
                        decoder_heads=2, patch=7, tubelet=2, num_frames=frames, image_size=image,
                        mlp_ratio=48 / 11)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape) * 0.2)
    ref.eval()
    assert ref.decoder.blocks[0].mlp.fc1.weight.shape == (int(22 * 48 / 11), 22)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, frames, image, image, 3)).astype(np.uint8)
    mean, std = (np.asarray(v, np.float32) for v in normalization.get("imagenet"))
    video = ((pixels / 255.0 - mean) / std).astype(np.float32)
    mask, decoder_mask = _masks(2, grid, 0.75, rng)
    with torch.no_grad():
        want = ref(torch.from_numpy(video.transpose(0, 4, 1, 2, 3)), torch.from_numpy(mask),
                   torch.from_numpy(decoder_mask)).numpy()
    ours = videomae.VideoMAEPretrain(size, mask_ratio=0.75, decoder_mask_ratio=0.5)
    target = nn.meta.unbox(jax.eval_shape(ours.init, jax.random.key(0), video, mask))["params"]
    params = cv.import_official({k: v.numpy() for k, v in ref.state_dict().items()}, target)
    with jax.default_matmul_precision("highest"):
        got = np.asarray(ours.apply({"params": params}, video, mask, decoder_mask=decoder_mask))
        tgt = losses.norm_pixel_target(jnp.asarray(pixels, jnp.float32) / 255.0, (2, 7, 7))
        loss = float(losses.dual_masked_reconstruction_loss(got, tgt, mask, decoder_mask))
    assert got.shape == want.shape == (2, 16, 3 * 2 * 7 * 7)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, err
    # the reference engine's loss: labels = target[~decode_mask], per-token mean, weighted by
    # bool_masked_pos[~decode_mask], summed over the batch, over the weights' sum
    t = torch.from_numpy(np.array(tgt))
    dm, m = torch.from_numpy(decoder_mask), torch.from_numpy(mask)
    labels = t[~dm].reshape(2, -1, t.shape[-1])
    per_token = ((torch.from_numpy(want) - labels) ** 2).mean(dim=-1)
    weight = m[~dm].reshape(2, -1).float()
    np.testing.assert_allclose(loss, float((per_token * weight).sum() / weight.sum()), rtol=1e-5)


# ---- FLOPs ---------------------------------------------------------------------------------------
def test_dual_masking_flops_by_hand():
    """ViT tiny-ish on 4 x 32 x 32 (patch 8: N = 32 tokens), tube mask 0.75 (M = 24, K = 8),
    running cell 0.5 (D = 16): the decoder runs on K + D = 24 tokens instead of 32."""
    s = videomae.VideoMAESize(dim=32, depth=2, heads=4, decoder_dim=16, decoder_heads=2,
                              decoder_depth=3, patch=8)
    k, d, p = 8, 16, 2 * 8 * 8 * 3
    embed = 2 * k * p * 32
    enc_block = 2 * k * (4 * 32 * 32 + 2 * 32 * 128) + 4 * k * k * 32
    e2d = 2 * k * 32 * 16
    dec_block = 2 * (k + d) * (4 * 16 * 16 + 2 * 16 * 64) + 4 * (k + d) ** 2 * 16
    head = 2 * d * 16 * p
    want = embed + 2 * enc_block + e2d + 3 * dec_block + head
    assert flops.videomae_pretrain_flops(s, (4, 32, 32, 3), 24, 16) == want
    # V1 (every masked token decoded) is the same formula with D = M: the decoder on N
    v1 = flops.videomae_pretrain_flops(s, (4, 32, 32, 3), 24)
    assert v1 == flops.videomae_pretrain_flops(s, (4, 32, 32, 3), 24, 24)
    assert v1 - want == 3 * (2 * 8 * (4 * 256 + 2 * 16 * 64) + 4 * (32 ** 2 - 24 ** 2) * 16) + \
        2 * 8 * 16 * p


# ---- pipeline and task ---------------------------------------------------------------------------
def test_pipeline_gives_a_running_cell_decoder_mask_per_view(data_dir):
    from tests.helpers import tiny_config
    c = tiny_config(data_dir, **{"data.num_repeats": 2})
    grid = (8, 8, 8)
    ds, _ = builders.pretrain_dataset(c.data, seed=0, local_batch=4, token_grid=grid,
                                      mask_ratio=0.9, decoder_mask_ratio=0.5)
    batch = next(iter(ds))
    assert batch["decoder_mask"].shape == (4, 512) and batch["decoder_mask"].dtype == bool
    starts = [[s for s in range(4) if (masking.running_cell_mask(grid, 0.5, start=s) == row).all()]
              for row in batch["decoder_mask"]]
    assert all(len(s) == 1 for s in starts)  # every row one of the 4 running cell patterns
    v1, _ = builders.pretrain_dataset(c.data, seed=0, local_batch=4, token_grid=grid,
                                      mask_ratio=0.9)
    v1 = next(iter(v1))
    assert "decoder_mask" not in v1
    # the first view of each video draws its frames, crop and tube mask before any decoder mask
    np.testing.assert_array_equal(v1["video"][0], batch["video"][0])
    np.testing.assert_array_equal(v1["mask"][0], batch["mask"][0])


def test_task_trains_two_steps_with_dual_masking_and_counts_the_smaller_decoder(data_dir, tmp_path):
    import json
    from internvideo_jax.tasks import get_task
    from internvideo_jax.training import train
    from tests.helpers import tiny_config
    c = tiny_config(data_dir, total_steps=2, **{"model.decoder_mask_ratio": 0.5})
    task = get_task(c)
    shape = (16, 64, 64, 3)
    assert task.model.num_decoded((1,) + shape) == 256
    assert task.flops_per_example() == flops.videomae_pretrain_flops(task.size, shape, 456, 256)
    assert task.flops_per_example() < get_task(tiny_config(data_dir)).flops_per_example()
    train.train(c, str(tmp_path), progress=False)
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    losses_seen = [x["loss"] for x in lines if "loss" in x]
    assert losses_seen and all(np.isfinite(losses_seen))


def test_v2_g14_preset_is_the_reference_recipe():
    """scripts/pretrain/vit_g_hybrid_pt.sh: 64 GPUs x 32 videos x 4 views, lr 6e-4 and min lr
    1e-5 scaled by the 2048 videos / 256, clip 0.02, 30 warmup of 300 epochs, 16 x 224 stride 4."""
    from experiments.videomae_v2 import get_config
    from internvideo_jax.tasks import get_task
    from internvideo_jax.training import optim
    c = get_config("v2_g14")
    assert (c.batch_size, c.data.num_repeats) == (8192, 4)
    assert optim.scaled_lr(c.optim.base_lr, c.batch_size) == pytest.approx(6e-4 * 2048 / 256)
    assert optim.scaled_lr(c.optim.min_lr, c.batch_size) == pytest.approx(1e-5 * 2048 / 256)
    assert (c.optim.grad_clip, c.optim.warmup_epochs, c.num_epochs) == (0.02, 30.0, 300.0)
    assert (c.optim.b2, c.optim.weight_decay, c.model.remat) == (0.95, 0.05, "full")
    assert (c.data.num_frames, c.data.stride, c.data.crop_size) == (16, 4, 224)
    task = get_task(c)
    s = task.size
    assert (s.dim, s.depth, s.heads, s.mlp_dim, s.patch) == (1408, 40, 16, 6144, 14)
    assert (s.decoder_dim, s.decoder_heads, s.decoder_depth, s.decoder_mlp_dim) == (512, 8, 4, 2234)
    shape = (1, 16, 224, 224, 3)  # 8 x 16 x 16 tokens: 230 of 256 masked per slice
    assert (task.model.num_masked(shape), task.model.num_decoded(shape)) == (1840, 1024)
