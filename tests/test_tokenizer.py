"""CLIP BPE tokenizer: the same ids as open_clip's SimpleTokenizer (the reference) on varied text."""
import importlib.util
import os

import numpy as np
import pytest

from input_pipelines import synthetic_videos
from internvideo_jax.text import tokenizer as tok


def _reference_tokenizer():
    """open_clip's tokenizer module, loaded by file path: importing the open_clip package needs a
    torchvision that loads beside the CPU torch wheel, and the tokenizer does not use it."""
    pytest.importorskip("torch")
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open-clip-torch (requirements-test.txt) is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "tokenizer.py")
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


CORPUS = [
    "a small red triangle moves to the left",
    "Hello, World!!! What's up? I'm fine; they'll go & we'd've gone...",
    "Café crème, naïve résumé, Ångström, São Paulo, Zürich, façade",
    "emoji 😀🎉👍🏽 and flags 🇫🇷 — dashes – and “curly quotes” ‘single’",
    "numbers 3.14159, 1,000,000, 42nd, 2026-11-27, ½ ² ³ Ⅻ ٣",
    "HTML &amp; entities &lt;b&gt; &amp;amp; double &#39;escaped&#39;",
    "mojibake: Ã©tÃ© â€œquotedâ€\x9d",
    "   lots\t\tof \n\n whitespace\u00a0and\u2003odd   spaces   ",
    "日本語のテキスト 中文字符 한국어 Ελληνικά русский текст العربية",
    "URLs https://example.com/a?b=c&d=e#frag and e-mail someone@example.org",
    "<start_of_text> literal special tokens <end_of_text> in text",
    "C++ / C# / F#; x**2 + y^2 = z^2; {braces} [brackets] (parens) <angle>",
    "ALL CAPS SHOUTING AND MiXeD cAsE",
    "",
    "a",
    "word " * 100,  # needs truncation
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis " * 8,
]


def test_ids_match_open_clip_on_a_varied_corpus():
    reference = _reference_tokenizer()
    ours = tok.get_tokenizer()
    corpus = CORPUS + [synthetic_videos.make_example(0, i, num_frames=2)["caption"]
                       for i in range(3)]
    expected = reference(corpus).numpy()
    got = ours(corpus)
    assert got.shape == expected.shape == (len(corpus), 77)
    for text, e, g in zip(corpus, expected, got):
        np.testing.assert_array_equal(g, e, err_msg=repr(text))
    for text in corpus:
        assert ours.encode(text) == reference.encode(text), repr(text)


def test_truncation_forces_eot_and_padding_is_zero():
    t = tok.get_tokenizer()
    long = t(["word " * 100])[0]
    assert long[0] == t.sot_id and long[-1] == t.eot_id and (long[1:-1] != 0).all()
    short = t(["a red circle"])[0]
    n = len(t.encode("a red circle"))
    assert short[n + 1] == t.eot_id and (short[n + 2:] == 0).all()
    assert int(np.argmax(short)) == n + 1  # eot is the largest id: CLIP pools at argmax


def test_decode_inverts_encode_up_to_cleaning():
    t = tok.get_tokenizer()
    text = "A Café, 3 emoji 😀 and C++!"
    assert t.decode(t(text)[0]) == "a café , 3 emoji 😀 and c ++!"
