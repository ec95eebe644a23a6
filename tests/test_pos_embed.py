"""Position-table resizing against PyTorch's F.interpolate (the reference's own operation)."""
import numpy as np
import pytest

from internvideo_jax.models import layers, pos_embed, videomae

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_video_table(table, src, dst):
    """The InternVideo rule, written with torch: (t*h*w, D) -> per frame bicubic to (H, W), then
    linear over time."""
    (t, h, w), (tt, hh, ww) = src, dst
    d = table.shape[1]
    x = torch.from_numpy(table).double().reshape(t, h, w, d).permute(0, 3, 1, 2)  # (t, D, h, w)
    x = F.interpolate(x, size=(hh, ww), mode="bicubic", align_corners=False)  # (t, D, H, W)
    x = x.permute(2, 3, 1, 0).reshape(hh * ww, d, t)  # (HW, D, t)
    x = F.interpolate(x, size=tt, mode="linear", align_corners=False)  # (HW, D, T)
    return x.permute(2, 0, 1).reshape(tt * hh * ww, d).numpy()


@pytest.mark.parametrize("n_in,n_out", [(14, 24), (14, 7), (7, 14), (4, 9), (1, 3), (5, 5)])
def test_bicubic_matrix_equals_torch(n_in, n_out):
    x = np.random.default_rng(0).normal(size=(2, 3, n_in, 1))
    want = F.interpolate(torch.from_numpy(x), size=(n_out, 1), mode="bicubic",
                         align_corners=False).numpy()[..., 0]
    got = np.einsum("oi,bci->bco", pos_embed.bicubic_matrix(n_in, n_out), x[..., 0])
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("n_in,n_out", [(8, 16), (8, 4), (3, 7), (1, 4), (6, 6)])
def test_linear_matrix_equals_torch(n_in, n_out):
    x = np.random.default_rng(1).normal(size=(2, 3, n_in))
    want = F.interpolate(torch.from_numpy(x), size=n_out, mode="linear",
                         align_corners=False).numpy()
    got = np.einsum("oi,bci->bco", pos_embed.linear_matrix(n_in, n_out), x)
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("src,dst", [((8, 14, 14), (16, 24, 24)), ((8, 14, 14), (4, 7, 7)),
                                     ((2, 4, 4), (4, 6, 5))])
def test_video_table_equals_torch_reference_rule(src, dst):
    table = layers.sinusoid_table(int(np.prod(src)), 32).astype(np.float64)
    got = pos_embed.resize_video_table(table, src, dst)
    np.testing.assert_allclose(got, torch_video_table(table, src, dst), atol=1e-12)


def test_resized_table_differs_from_a_fresh_table():
    """Why the rule matters: the resized 16x224 table is not the sinusoid table of 32x384."""
    got = videomae.position_table((16, 24, 24), 64, trained_grid=(8, 14, 14))
    fresh = videomae.position_table((16, 24, 24), 64)
    assert got.shape == fresh.shape == (16 * 24 * 24, 64)
    assert np.abs(got - fresh).max() > 0.5
    # Same grid: the table itself.
    np.testing.assert_array_equal(videomae.position_table((8, 14, 14), 64, (8, 14, 14)),
                                  layers.sinusoid_table(8 * 14 * 14, 64))


def test_cls_table_keeps_the_class_row():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(1 + 7 * 7, 16)).astype(np.float32)
    out = pos_embed.resize_cls_table(table, (10, 10))
    assert out.shape == (101, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], table[0])
    want = F.interpolate(torch.from_numpy(table[1:].reshape(1, 7, 7, 16)).permute(0, 3, 1, 2),
                         size=(10, 10), mode="bicubic", align_corners=False)
    np.testing.assert_allclose(out[1:], want.permute(0, 2, 3, 1).reshape(100, 16).numpy(),
                               atol=1e-5)
    with pytest.raises(ValueError, match="not a square"):
        pos_embed.resize_cls_table(table[:-1], (10, 10))
