"""A compact CLIP tokenizer for the miniature world: real CLIP BPE, restricted to the merges the world's words use.

The full CLIP vocabulary (49,408 tokens) would make a mini text encoder's embedding table larger than the rest of
the model. This tokenizer keeps the 512 byte symbols, and only those merges of OpenAI CLIP's merge list that fire
on the world's vocabulary (in CLIP's order). BPE then splits every world word exactly as real CLIP does (same
token strings; ids are renumbered), and any other word still tokenises, into smaller pieces.
"""

from __future__ import annotations

import re
from functools import lru_cache

from transformers import CLIPTokenizer

from ...clip_tokenizer import clip_vocab_and_merges  # OpenAI CLIP's vocabulary and merge list, in order
from ..scene.captions import (
    _BACKGROUND_KEYWORDS,
    _GENERIC_GARMENTS,
    _PHOTO_WORDS,
    ACCESSORY_WORDS,
    BACKGROUND_PHRASES,
    CLOTHING_WORDS,
    COLOUR_WORDS,
    FACIAL_HAIR_WORDS,
    GENDER_WORDS,
    HAIR_COLOUR_WORDS,
    HAIR_STYLE_PHRASES,
    PHOTO_PREFIXES,
    SKIN_TONE_WORDS,
    STYLE_WORDS,
)

# Words users type around the world's vocabulary (prompt glue, the paper's prompts, common extras).
_EXTRA_TEXT = """
a an the of in on at by and with wearing wears is are person people portrait photo style painting sketch
drawing image picture close up closeup face head shoulders smiling running facing to camera front back
standing sitting young old hair black brown blonde red gray white beard glasses hat anime ghibli animation
comic book ukiyo-e time square snowy field living room night sky stars flowers plain background studio
high quality detailed realistic photorealistic best worst low blurry deformed ugly bad """

_WORD = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")  # CLIP's split, for ASCII text


def world_words() -> list[str]:
    """Every word the world's captions and parser use, plus common prompt words, lower-cased and de-duplicated."""
    tables = (GENDER_WORDS, BACKGROUND_PHRASES, CLOTHING_WORDS, COLOUR_WORDS, ACCESSORY_WORDS, STYLE_WORDS)
    tables += (HAIR_COLOUR_WORDS, HAIR_STYLE_PHRASES, FACIAL_HAIR_WORDS)
    texts = [phrase.replace("{c}", "") for table in tables for phrases in table.values() for phrase in phrases]
    texts += [phrase for phrases in SKIN_TONE_WORDS for phrase in phrases] + ["bald"]
    texts += list(PHOTO_PREFIXES) + list(_PHOTO_WORDS) + list(_GENERIC_GARMENTS)
    texts += [k for keys in _BACKGROUND_KEYWORDS.values() for k in keys] + [_EXTRA_TEXT]
    words = set()
    for text in texts:
        words.update(_WORD.findall(text.lower()))
    return sorted(words)


def _bpe_merges_used(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """Run CLIP's BPE on one word and return the merges it applies."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(parts) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        pair = (parts[i], parts[i + 1])
        used.append(pair)
        merged, j = [], 0
        while j < len(parts):  # merge every occurrence, as CLIP does
            if j < len(parts) - 1 and (parts[j], parts[j + 1]) == pair:
                merged.append(parts[j] + parts[j + 1])
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return used


@lru_cache(maxsize=1)
def _compact_vocab() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    full_vocab, full_merges = clip_vocab_and_merges()
    ranks = {tuple(m): i for i, m in enumerate(full_merges)}
    used = set()
    for word in world_words():
        used.update(_bpe_merges_used(word, ranks))
    merges = sorted(used, key=ranks.__getitem__)
    byte_symbols = sorted(full_vocab.items(), key=lambda kv: kv[1])[:512]  # plain and with "</w>"
    tokens = [tok for tok, _ in byte_symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return tuple((tok, i) for i, tok in enumerate(tokens)), tuple(merges)


def world_tokenizer(model_max_length: int = 48) -> CLIPTokenizer:
    """The compact CLIP tokenizer of the miniature world (about 1,000 tokens; captions fit in 48 positions)."""
    vocab, merges = _compact_vocab()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length, pad_token="<|endoftext|>"
    )
