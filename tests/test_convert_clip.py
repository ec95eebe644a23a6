"""CLIP text encoder: HF transformers' CLIPTextModelWithProjection with random weights, imported,
gives the same text embeddings; the tokenizer's ids feed both."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from internvideo_jax.convert import clip as conv  # noqa: E402
from internvideo_jax.convert.common import ConversionError  # noqa: E402
from internvideo_jax.models import clip  # noqa: E402
from internvideo_jax.text.tokenizer import get_tokenizer  # noqa: E402

SIZE = clip.TextSize(width=32, layers=2, heads=4, embed_dim=16)


def _hf_model():
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=16,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=49407)
    model = transformers.CLIPTextModelWithProjection(config).eval()
    with torch.no_grad():  # LayerNorms away from ones/zeros so that a swap would show
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model


def test_hf_clip_text_weights_give_the_same_embeddings():
    model = _hf_model()
    ids = get_tokenizer()(["a small red triangle moves to the left", "Hello, World!",
                           "word " * 100])
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(ids.astype(np.int64))).text_embeds.numpy()
    ours = clip.TextEncoder(SIZE)
    target = jax.eval_shape(lambda: nn.meta.unbox(ours.init(jax.random.key(0),
                                                            jnp.asarray(ids)))["params"])
    params = conv.import_text(model.state_dict(), target)
    got = np.asarray(ours.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.1


def test_openai_layout_with_a_visual_tower_and_prefix_imports_the_text_tower():
    model = _hf_model()
    openai = conv.hf_to_openai(model.state_dict())
    state = {"clip." + k: v for k, v in openai.items()}
    state["clip.visual.conv1.weight"] = np.zeros((4, 3, 2, 2))  # dropped: text import only
    ours = clip.TextEncoder(SIZE)
    target = jax.eval_shape(lambda: nn.meta.unbox(ours.init(
        jax.random.key(0), jnp.zeros((1, 77), jnp.int32)))["params"])
    params = conv.import_text(state, target)
    np.testing.assert_array_equal(params["text_projection"],
                                  model.state_dict()["text_projection.weight"].numpy().T)
    del state["clip.ln_final.bias"]
    with pytest.raises(ConversionError, match="ln_final.bias"):
        conv.import_text(state, target)
