"""Does the base model's text encoder carry every word of the prompt to the UNet? Two measures (issue #11):

- **minimal pairs**: captions that differ only in one attribute (same wording otherwise); the cosine of their
  pooled embeddings and of their UNet contexts (the whole last hidden state, flattened). A cosine near 1 means
  the encoder has all but lost the word;
- **linear probe**: a linear classifier trained on the mean-pooled UNet context of random captions to read
  back each attribute the caption names, scored on other captions (and the same probe on the input token
  embeddings, where every word is still present, as the control).

    python -m infinite_id.world.experiments.text_probe --model DIR [--json OUT]

``--model`` is a base-model folder (``text_encoder/``, ``tokenizer/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer

from ..scene.captions import caption, sample_mentions
from ..scene.factors import (
    ACCESSORIES,
    BACKGROUNDS,
    CLOTHING_COLOURS,
    CLOTHING_KINDS,
    STYLES,
    Semantics,
    identity_from_id,
)

#: attribute -> its values, for the semantic attributes a caption can name.
PROBED: dict[str, tuple[str, ...]] = {
    "clothing": CLOTHING_KINDS,
    "accessory": ACCESSORIES[1:],
    "clothing_colour": tuple(CLOTHING_COLOURS),
    "background": BACKGROUNDS,
    "style": STYLES[1:],
    "gender": ("man", "woman"),
}


@torch.no_grad()
def encode(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, texts: list[str]) -> tuple[torch.Tensor, ...]:
    """(input token embeddings, UNet context, pooled embedding) of ``texts``."""
    ids = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids
    out = text_encoder(ids)
    tokens = text_encoder.get_input_embeddings()(ids)
    return tokens, out.last_hidden_state, out.pooler_output


def _pair_captions(attribute: str, count: int, seed: int) -> tuple[list[str], list[str]]:
    """``count`` caption pairs differing only in ``attribute`` (both name it; the rest is shared)."""
    rng = np.random.default_rng([seed, 91])
    first, second = [], []
    for i in range(count):
        identity = identity_from_id(int(rng.integers(1_000_000)))
        semantics = Semantics.sample(rng)
        gender = identity.gender
        values = PROBED[attribute]
        a, b = rng.choice(len(values), size=2, replace=False)
        mention = set(sample_mentions(semantics, rng)) | {attribute, "gender"}
        if attribute in ("clothing", "clothing_colour"):
            mention |= {"clothing"}
        texts = []
        for value in (values[a], values[b]):
            if attribute == "gender":
                gender = value
                chosen = semantics
            else:
                chosen = dataclasses.replace(semantics, **{attribute: value})
            texts.append(caption(chosen, gender, np.random.default_rng([seed, 92, i]), mention))
        first.append(texts[0])
        second.append(texts[1])
    return first, second


def minimal_pairs(text_encoder, tokenizer, count: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
    result = {}
    for attribute in PROBED:
        a, b = _pair_captions(attribute, count, seed)
        _, context_a, pooled_a = encode(text_encoder, tokenizer, a)
        _, context_b, pooled_b = encode(text_encoder, tokenizer, b)
        result[attribute] = {
            "pooled_cosine": float(F.cosine_similarity(pooled_a, pooled_b).mean()),
            "context_cosine": float(F.cosine_similarity(context_a.flatten(1), context_b.flatten(1)).mean()),
        }
    return result


def _probe_set(count: int, seed: int) -> tuple[list[str], dict[str, list[int]]]:
    rng = np.random.default_rng([seed, 93])
    texts, labels = [], {name: [] for name in PROBED}
    for _ in range(count):
        identity = identity_from_id(int(rng.integers(1_000_000)))
        semantics = Semantics.sample(rng)
        mention = set(sample_mentions(semantics, rng)) | {"gender", "clothing", "background", "style"}
        if semantics.accessory != "none":
            mention.add("accessory")
        texts.append(caption(semantics, identity.gender, rng, mention))
        for name, values in PROBED.items():
            value = identity.gender if name == "gender" else getattr(semantics, name)
            named = name in mention and value in values and (name != "style" or value != "photo")
            labels[name].append(values.index(value) if named else -1)
    return texts, labels


def _linear_probe(train_x, train_y, test_x, test_y, classes: int, steps: int = 300) -> float:
    keep_train, keep_test = train_y >= 0, test_y >= 0
    x, y = train_x[keep_train], train_y[keep_train]
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    probe = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = F.cross_entropy(probe((x - mean) / std), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe((test_x[keep_test] - mean) / std).argmax(1)
    return float((predicted == test_y[keep_test]).float().mean())


def linear_probes(text_encoder, tokenizer, count: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    torch.manual_seed(seed)
    texts, labels = _probe_set(count, seed)
    tokens, context, _ = encode(text_encoder, tokenizer, texts)
    split = int(0.8 * count)
    features = {"context": context.mean(dim=1), "tokens": tokens.mean(dim=1)}
    result = {}
    for name, values in PROBED.items():
        y = torch.tensor(labels[name])
        counts = torch.bincount(y[y >= 0], minlength=len(values)).float()
        result[name] = {"chance": float(counts.max() / counts.sum())}
        for kind, x in features.items():
            result[name][kind] = _linear_probe(x[:split], y[:split], x[split:], y[split:], len(values))
    return result


def probe_report(model_dir: str | Path, seed: int = 0) -> dict:
    model = Path(model_dir)
    text_encoder = CLIPTextModel.from_pretrained(model / "text_encoder").eval()
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    return {
        "minimal_pairs": minimal_pairs(text_encoder, tokenizer, seed=seed),
        "linear_probe": linear_probes(text_encoder, tokenizer, seed=seed),
    }


def format_report(report: dict) -> str:
    lines = [
        "| attribute changed / probed | pooled cosine | UNet-context cosine | probe on context | on tokens | chance |",
        "|---|---|---|---|---|---|",
    ]
    for name in PROBED:
        pairs, probe = report["minimal_pairs"][name], report["linear_probe"][name]
        lines.append(
            f"| {name} | {pairs['pooled_cosine']:.3f} | {pairs['context_cosine']:.3f} | {probe['context']:.2f} |"
            f" {probe['tokens']:.2f} | {probe['chance']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Minimal-pair and linear-probe measures of a text encoder.")
    parser.add_argument("--model", required=True, help="a base-model folder (text_encoder/, tokenizer/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the report here (a new file)")
    args = parser.parse_args(argv)
    if args.json and Path(args.json).exists():
        parser.error(f"--json {args.json} exists; choose a new file")
    report = probe_report(args.model, args.seed)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
