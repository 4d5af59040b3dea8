"""The real CLIP BPE tokenizer, built offline from the vocabulary file shipped in this package.

``assets/bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's byte-pair vocabulary (MIT licence). Token ids match
the tokenizers of SD 1.5 and SDXL, so tests and the miniature world use the same tokenization as real models.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

from transformers import CLIPTokenizer

_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> list[str]:
    """The 256 symbols of byte-level BPE in vocabulary order: printable bytes as themselves, then the rest
    mapped to code points from 256 on (the GPT-2/CLIP convention)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    data = resources.files("infinite_id.assets").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 1 + _NUM_MERGES]]
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def clip_tokenizer(model_max_length: int = 77, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """A ``CLIPTokenizer`` identical to OpenAI CLIP's (49,408 tokens). SDXL's second tokenizer pads with ``"!"``."""
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length, pad_token=pad_token
    )
