"""Video QA (InternVideo's 'vtc_cap' head, models/video_qa.py): the logits of our VideoQAModel
against the independent PyTorch module with the official keys (torch_models/multimodal.py
InternVideoQA) through the converter; the EOT feature of zero-padded questions read off the
decoder's hidden states; strict import and bit-exact export of the QA checkpoint layout; the
converter command."""
import json

import numpy as np
import pytest

import flax.linen as nn
import jax
import jax.numpy as jnp

from internvideo_jax.convert import common
from internvideo_jax.convert import multimodal as conv
from internvideo_jax.models import caption_decoder, clip, layout, multimodal, video_qa

SIZE = multimodal.get_size("tiny")
ANSWERS = 7
CLIP_KWARGS = dict(image_size=64, patch=8, width=64, layers=4, heads=4, return_list=[2, 3],
                   embed_dim=64, text_width=64, text_layers=2, text_heads=4)
HEAD_KEYS = {f"vqa_classifier.{i}.{leaf}" for i in (1, 2, 5) for leaf in ("weight", "bias")}
EOT, SOT = 49407, 49406


def _ours(scan=False):
    model = video_qa.VideoQAModel(SIZE, ANSWERS, scan=scan)
    params = jax.device_get(nn.meta.unbox(model.init(
        jax.random.key(0), jnp.zeros((1, 4, 64, 64, 3)), jnp.zeros((1, 77), jnp.int32))))
    return model, params["params"]


def _randomised(params, seed=0):
    """Every parameter random (the zero-initialised ones too), norms around 1."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: (x + rng.normal(size=x.shape) * (0.3 if x.ndim > 1 else 0.5)).astype(x.dtype),
        params)


def _reference():
    torch = pytest.importorskip("torch")
    from internvideo_jax.torch_models.multimodal import InternVideoQA
    torch.manual_seed(0)
    ref = InternVideoQA(CLIP_KWARGS, decoder_layers=2, decoder_heads=4, num_answers=ANSWERS,
                        num_visual_queries=16)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            is_norm_weight = name.endswith(("ln_1.weight", "ln_2.weight", "ln_3.weight", "gamma",
                                            "norm.weight", "ln_final.weight", "ln_pre.weight",
                                            "vqa_classifier.2.weight"))
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5) + float(is_norm_weight))
    return ref.eval()


def _questions():
    """Two zero-padded questions of different lengths: EOT at 4 and at 6."""
    ids = np.zeros((2, 77), np.int64)
    ids[0, :5] = [SOT, 320, 1125, 530, EOT]
    ids[1, :7] = [SOT, 518, 2368, 320, 4558, 1125, EOT]
    return ids


def _video(seed=1):
    return np.random.default_rng(seed).normal(size=(2, 4, 64, 64, 3)).astype(np.float32)


def test_logits_match_the_reference_and_the_checkpoint_round_trips():
    torch = pytest.importorskip("torch")
    ref = _reference()
    checkpoint = {k: v.numpy() for k, v in ref.state_dict().items()}
    assert {k for k in checkpoint if k.startswith("vqa_classifier.")} == HEAD_KEYS
    assert checkpoint["vqa_classifier.1.weight"].shape == (2 * 192, 192)  # hs = 64 + 2 * 64
    assert not [k for k in checkpoint if k in ("clip.visual_proj", "clip.text_projection")
                or k.startswith("caption_decoder.predictor.")]
    model, params = _ours()
    imported = conv.import_internvideo({"state_dict": checkpoint, "epoch": 1}, params)

    video, ids = _video(), _questions()
    with torch.no_grad():
        want = ref(torch.from_numpy(video.transpose(0, 4, 1, 2, 3).copy()),
                   torch.from_numpy(ids)).numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(model.apply({"params": imported}, jnp.asarray(video),
                                     jnp.asarray(ids, jnp.int32)))
    assert got.shape == (2, ANSWERS) and got.dtype == np.float32
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-6)  # tanh GELU: 1e-3 off

    back = conv.export_internvideo(imported)
    assert back.keys() == checkpoint.keys()
    for k, v in checkpoint.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)


def _direct_features(params, video, ids):
    """The head's input computed from the parts directly: the video tower, clip.TextEncoder (with
    a throwaway projection) and the caption decoder without its predictor, read at the EOT (the
    position of the row's largest id) -> ((B, hs), decoder states (B, 77, D))."""
    feature, visual_tokens = video_qa.QAVideoTower(SIZE.video).apply(
        {"params": params["visual"]}, video)  # (B, Wv), (B, M, Wv)
    text_params = dict(params["textual"],
                       text_projection=jnp.zeros((SIZE.text.width, SIZE.text.embed_dim)))
    _, tokens = clip.TextEncoder(SIZE.text).apply({"params": text_params}, ids,
                                                  tokens=True)  # (B, 77, Wt)
    states = caption_decoder.CaptionDecoder(SIZE.decoder, predictor=False).apply(
        {"params": params["decoder"]}, visual_tokens, tokens)  # (B, 77, Wt)
    eot = np.argmax(np.asarray(ids), axis=1)
    rows = np.arange(len(eot))
    features = np.concatenate([np.asarray(states)[rows, eot], np.asarray(feature),
                               np.asarray(tokens)[rows, eot]], axis=1)
    return features, np.asarray(states)


def test_the_eot_feature_of_padded_questions():
    model, params = _ours()
    params = _randomised(params)
    video, ids = jnp.asarray(_video()), _questions()
    d = SIZE.text.width

    def features(question_ids):
        return np.asarray(model.apply({"params": params}, video,
                                      jnp.asarray(question_ids, jnp.int32),
                                      method=model.answer_features))

    def logits(question_ids):
        return np.asarray(model.apply({"params": params}, video,
                                      jnp.asarray(question_ids, jnp.int32)))

    got = features(ids)
    want, states = _direct_features(params, video, jnp.asarray(ids, jnp.int32))
    assert got.shape == (2, 2 * d + SIZE.video.width)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, :d], states[[0, 1], [4, 6]], rtol=1e-5, atol=1e-5)

    # what follows the EOT (padding, or anything below the EOT id) changes nothing
    rng = np.random.default_rng(3)
    other_padding = ids.copy()
    for row, eot in enumerate((4, 6)):
        other_padding[row, eot + 1:] = rng.integers(1, SOT, 77 - eot - 1)
    np.testing.assert_allclose(logits(other_padding), logits(ids), rtol=1e-6, atol=1e-6)

    # the EOT one token later: the decoder state read is the new position's
    later = ids.copy()
    later[0, 4:6] = [2368, EOT]
    later[1, 6:8] = [530, EOT]
    moved = features(later)
    _, later_states = _direct_features(params, video, jnp.asarray(later, jnp.int32))
    np.testing.assert_allclose(moved[:, :d], later_states[[0, 1], [5, 7]], rtol=1e-5,
                               atol=1e-5)
    assert np.abs(moved[:, :d] - later_states[[0, 1], [4, 6]]).min(axis=1).max() > 1e-3
    # the video feature does not depend on the question
    np.testing.assert_allclose(moved[:, d:d + SIZE.video.width],
                               got[:, d:d + SIZE.video.width], rtol=1e-6, atol=1e-6)


def test_decoder_without_predictor_is_the_full_decoder_less_its_predictor():
    visual = jnp.asarray(np.random.default_rng(0).normal(size=(2, 30, 64)), jnp.float32)
    text = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 64)), jnp.float32)
    full = caption_decoder.CaptionDecoder(SIZE.decoder)
    params = nn.meta.unbox(full.init(jax.random.key(0), visual, text))["params"]
    hidden_model = caption_decoder.CaptionDecoder(SIZE.decoder, predictor=False)
    hidden_params = nn.meta.unbox(hidden_model.init(jax.random.key(0), visual, text))["params"]
    assert set(hidden_params) == {k for k in params if not k.startswith("predictor_")}
    hidden = hidden_model.apply({"params": hidden_params}, visual, text)
    assert hidden.shape == (2, 9, 64) and hidden.dtype == jnp.float32
    assert full.apply({"params": params}, visual, text).shape == (2, 9, SIZE.decoder.vocab_size)


def test_param_tree_is_the_multimodal_models_less_the_removed_parts():
    """Every QA parameter but the head is at the same path and shape in the pretraining model's
    tree (so that a pretraining checkpoint loads by path); what the QA model leaves out is
    exactly the two projections and the predictor, as the reference."""
    _, params = _ours()
    pretrain = jax.eval_shape(multimodal.VideoTextModel(SIZE).init, jax.random.key(0),
                              jnp.zeros((1, 4, 64, 64, 3)), jnp.zeros((1, 77), jnp.int32))
    ours = {p: v.shape for p, v in common.flatten(params).items()}
    theirs = {p: v.shape for p, v in common.flatten(nn.meta.unbox(pretrain)["params"]).items()}
    assert {p for p in ours if p[0] == "vqa_classifier"} == {
        ("vqa_classifier", layer, leaf) for layer, leaves in
        (("fc", ("kernel", "bias")), ("norm", ("scale", "bias")), ("out", ("kernel", "bias")))
        for leaf in leaves}
    assert all(theirs[p] == shape for p, shape in ours.items() if p[0] != "vqa_classifier")
    left_out = sorted("/".join(p[:2]) for p in theirs if p not in ours)
    assert set(left_out) == {"textual/text_projection", "visual/visual_proj",
                             "decoder/predictor_fc", "decoder/predictor_norm_1",
                             "decoder/predictor_norm_2", "decoder/predictor_out"}


def test_strict_import_names_extra_missing_and_mismatched_keys():
    _, params = _ours()
    good = conv.export_internvideo(params)
    assert HEAD_KEYS <= good.keys()

    extra = dict(good, **{"vqa_classifier.3.weight": np.ones((4, 4), np.float32)})
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo(extra, params)
    assert e.value.unexpected == ["vqa_classifier.3.weight"] and not e.value.missing

    missing = dict(good)
    del missing["vqa_classifier.5.bias"]
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo(missing, params)
    assert e.value.missing == ["vqa_classifier.5.bias"] and not e.value.unexpected

    wrong = dict(good, **{"vqa_classifier.5.weight": good["vqa_classifier.5.weight"][:-1]})
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo(wrong, params)
    assert [m[0] for m in e.value.mismatched] == ["vqa_classifier.5.weight"]

    # a pretraining checkpoint is not a QA one: the head is missing, the removed parts unexpected
    pretrain_model = multimodal.VideoTextModel(SIZE)
    pretrain = nn.meta.unbox(pretrain_model.init(
        jax.random.key(0), jnp.zeros((1, 4, 64, 64, 3)), jnp.zeros((1, 77), jnp.int32)))
    pretrain_sd = conv.export_internvideo(jax.device_get(pretrain["params"]))
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo(pretrain_sd, params)
    assert sorted(e.value.missing) == sorted(HEAD_KEYS)
    assert {"clip.visual_proj", "clip.text_projection",
            "caption_decoder.predictor.4.weight"} <= set(e.value.unexpected)

    # a QA checkpoint into the pretraining model: refused, pointing at --model internvideo_qa
    with pytest.raises(common.ConversionError) as e:
        conv.import_internvideo(good, jax.device_get(pretrain["params"]))
    assert set(e.value.unexpected) == HEAD_KEYS and "--model internvideo_qa" in str(e.value)
    assert "clip.visual_proj" in e.value.missing


def test_scanned_qa_model_equals_the_per_layer_one():
    model, params = _ours()
    params = _randomised(params, seed=4)
    scanned, scanned_init = _ours(scan=True)
    stacked = layout.stack_layers(params)
    assert jax.tree.structure(stacked) == jax.tree.structure(scanned_init)
    video, ids = jnp.asarray(_video()), jnp.asarray(_questions(), jnp.int32)
    with jax.default_matmul_precision("highest"):
        a = model.apply({"params": params}, video, ids)
        b = scanned.apply({"params": stacked}, video, ids)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


def test_training_mode_uses_dropout():
    model, params = _ours()
    video, ids = jnp.asarray(_video()), jnp.asarray(_questions(), jnp.int32)
    eval_logits = model.apply({"params": params}, video, ids)
    train_logits = model.apply({"params": params}, video, ids, deterministic=False,
                               rngs={"dropout": jax.random.key(5)})
    assert np.isfinite(np.asarray(train_logits)).all()
    assert np.abs(np.asarray(train_logits - eval_logits)).max() > 1e-6


def test_import_and_export_commands(tmp_path):
    torch = pytest.importorskip("torch")
    from internvideo_jax.convert import registry
    from internvideo_jax.convert.__main__ import main
    from internvideo_jax.training.checkpointing import load_params
    assert "internvideo_qa" in registry.model_names()
    _, params = _ours()
    checkpoint = conv.export_internvideo(params)
    checkpoint["clip.text_mask_embedding"] = np.zeros((1, 1, 64), np.float32)  # always there
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in checkpoint.items()},
                "epoch": 3}, tmp_path / "qa.ckpt")
    main(["import", "--src", str(tmp_path / "qa.ckpt"), "--model", "internvideo_qa",
          "--size", "tiny", "--frames", "4", "--drop-prefix", "clip.text_mask_embedding",
          "--out", str(tmp_path / "ours")])
    got, _ = load_params(str(tmp_path / "ours"))
    assert jax.tree.structure(got) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    with open(tmp_path / "ours" / "model.json") as f:
        described = json.load(f)
    assert described["name"] == "tiny" and described["num_answers"] == ANSWERS

    main(["export", "--src", str(tmp_path / "ours"), "--to", "pth", "--out",
          str(tmp_path / "back.ckpt")])
    back = torch.load(tmp_path / "back.ckpt")["state_dict"]
    del checkpoint["clip.text_mask_embedding"]
    assert back.keys() == checkpoint.keys()
    for k, v in checkpoint.items():
        np.testing.assert_array_equal(back[k].numpy(), v, err_msg=k)

    pretrain = multimodal.VideoTextModel(SIZE)
    pretrain_sd = conv.export_internvideo(jax.device_get(nn.meta.unbox(pretrain.init(
        jax.random.key(0), jnp.zeros((1, 4, 64, 64, 3)),
        jnp.zeros((1, 77), jnp.int32)))["params"]))
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in pretrain_sd.items()}},
               tmp_path / "mm.ckpt")
    with pytest.raises(SystemExit, match=r"(?s)not a QA checkpoint.*vqa_classifier\.5\.weight"):
        main(["import", "--src", str(tmp_path / "mm.ckpt"), "--model", "internvideo_qa",
              "--frames", "4", "--out", str(tmp_path / "wrong")])
