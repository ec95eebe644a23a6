"""CLIP's byte-level BPE tokenizer (the ids of OpenAI CLIP / open_clip's SimpleTokenizer).

Text -> ids, as the reference does it:
  1. clean: ftfy.fix_text (mojibake, odd quotes), HTML entities unescaped twice, whitespace runs
     collapsed to one space, stripped, lower-cased;
  2. split with CLIP's pattern: contractions ('s 't 're 've 'm 'll 'd), letter runs, single digits,
     runs of other non-space characters; the special token strings stay whole;
  3. each piece -> UTF-8 bytes -> printable stand-in characters (bytes_to_unicode), the last one
     marked with '</w>', then merged pairwise by rank (lowest rank first) until no ranked pair is
     left; each resulting symbol is one id;
  4. [sot] + ids + [eot], zero-padded to the context length (77); longer texts are cut to the
     context length and the last id forced to eot (so eot pooling always finds it).

The vocabulary (bpe_simple_vocab_16e6.txt.gz: 48,894 merges; 49,408 ids with the 256 bytes, their
'</w>' forms and the two special tokens) ships with the package; nothing is downloaded.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.resources

import ftfy
import numpy as np
import regex

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # the merges CLIP uses (the file has a header line and more)
SOT, EOT = "<start_of_text>", "<end_of_text>"
CONTEXT_LENGTH = 77
_SPLIT = regex.compile(
    "|".join(map(regex.escape, (SOT, EOT)))
    + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def _printable_bytes() -> list[int]:
    return [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]


@functools.cache
def byte_symbols() -> tuple[str, ...]:
    """The printable character standing for each byte value 0..255.

    Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68
    (control characters, space, soft hyphen) map, in byte order, to chr(256), chr(257), ...
    """
    printable = set(_printable_bytes())
    others = [b for b in range(256) if b not in printable]
    symbols = {b: chr(b) for b in printable} | {b: chr(256 + k) for k, b in enumerate(others)}
    return tuple(symbols[b] for b in range(256))


def _single_symbols_in_id_order() -> list[str]:
    """Ids 0..255 are the byte symbols, printable bytes first (the reference's order)."""
    printable = _printable_bytes()
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(256 - len(printable))]


def clean(text: str) -> str:
    """ftfy fix, double HTML unescape, whitespace collapsed and stripped, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class Tokenizer:
    """CLIP BPE: `encode` gives the BPE ids of a text, `__call__` the padded (N, 77) id array."""

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        with importlib.resources.files(__package__).joinpath(VOCAB_FILE).open("rb") as f:
            lines = gzip.decompress(f.read()).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
        singles = _single_symbols_in_id_order()
        vocab = singles + [s + "</w>" for s in singles] + ["".join(m) for m in merges]
        vocab += [SOT, EOT]
        self.ids = {symbol: i for i, symbol in enumerate(vocab)}
        self.symbols = vocab
        self.rank = {pair: r for r, pair in enumerate(merges)}
        self.sot_id, self.eot_id = self.ids[SOT], self.ids[EOT]
        self.vocab_size = len(vocab)  # 49408
        self.context_length = context_length
        self._cache: dict[str, tuple[int, ...]] = {}

    def _merge(self, piece: str) -> tuple[int, ...]:
        """BPE ids of one split piece (already in byte symbols)."""
        if piece in self._cache:
            return self._cache[piece]
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            ranks = [self.rank.get(p, NUM_MERGES) for p in zip(word, word[1:])]
            best = min(ranks)
            if best == NUM_MERGES:
                break
            first, second = word[ranks.index(best)], word[ranks.index(best) + 1]
            merged, i = [], 0
            while i < len(word):  # merge every occurrence of the pair, left to right
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = tuple(self.ids[s] for s in word)
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of a text, without sot/eot."""
        symbols = byte_symbols()
        out: list[int] = []
        for piece in _SPLIT.findall(clean(text)):
            if piece in (SOT, EOT):
                out.append(self.ids[piece])
            else:
                out.extend(self._merge("".join(symbols[b] for b in piece.encode("utf-8"))))
        return out

    def decode(self, ids) -> str:
        """Text of ids (special tokens and padding dropped); a word end ('</w>') is a space."""
        to_byte = {s: b for b, s in enumerate(byte_symbols())}
        out = bytearray()
        for i in ids:
            if not 0 < int(i) < self.vocab_size or int(i) in (self.sot_id, self.eot_id):
                continue
            symbol = self.symbols[int(i)]
            word_end = symbol.endswith("</w>")
            out += bytes(to_byte[c] for c in symbol.removesuffix("</w>"))
            out += b" " if word_end else b""
        return out.decode("utf-8", "replace").strip()

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        """(N, context_length) int32 ids: sot, text, eot, zeros; over-long texts end in eot."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.context_length), np.int32)
        for row, text in zip(out, texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id][:self.context_length]
            ids[-1] = self.eot_id
            row[:len(ids)] = ids
        return out


@functools.cache
def get_tokenizer(context_length: int = CONTEXT_LENGTH) -> Tokenizer:
    """A shared tokenizer (loading the vocabulary takes ~0.3 s)."""
    return Tokenizer(context_length)
