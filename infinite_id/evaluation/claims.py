"""The paper's claims as checks: each a paired difference between two table rows, with a standard error and a
verdict, so a run says "agrees", "disagrees" or "unclear" instead of leaving the reader to compare two means.

A claim compares ``metric`` of row ``a`` with row ``b`` image by image, over the same identity, prompt and seed
(pairing removes the spread between identities and prompts, which is most of the spread). The verdict is
``agrees`` when the mean difference has the paper's sign and lies beyond both two standard errors and
:data:`MIN_EFFECT`, ``disagrees`` when it does so with the other sign, ``unclear`` otherwise (or with no pairs).

Rows are named by the caller: ``infinite-id eval`` names them by (prompt set, method) and checks
:data:`EVAL_CLAIMS`, the claims that one adapter can answer; the miniature world's reproduction names them by its
table rows and adds the claims that need a second adapter.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .metrics import summarize

__all__ = [
    "ALL_PROMPTS",
    "EVAL_CLAIMS",
    "MIN_EFFECT",
    "PAPER_ABLATIONS",
    "Claim",
    "check_claims",
    "claims_for_methods",
    "claims_markdown",
    "metric_value",
    "paired_difference",
    "paired_values",
    "paper_claim",
    "rows_by_method",
]

#: The prompt-set name of the rows that pool every prompt set of a run.
ALL_PROMPTS = "all"
#: The smallest difference a verdict counts (cosine or accuracy units): less is no practical difference.
MIN_EFFECT = 0.01

#: The paper's ablation table (section 4.3, M_FaceNet as ID similarity; IP-Adapter from its main comparison).
PAPER_ABLATIONS: dict[str, dict[str, float]] = {
    "infinite-id": {"clip_t": 0.340, "clip_i": 0.913, "face_sim": 0.689},
    "no-enhanced-training": {"clip_t": 0.329, "clip_i": 0.891, "face_sim": 0.593},
    "no-mixed-attention": {"clip_t": 0.331, "clip_i": 0.905, "face_sim": 0.700},
    "mutual-attention": {"clip_t": 0.316, "clip_i": 0.808, "face_sim": 0.398},
    "ip-adapter-style": {"clip_t": 0.274, "clip_i": 0.905, "face_sim": 0.474},
}


@dataclass(frozen=True)
class Claim:
    """A comparison the paper makes: ``metric`` of row ``a`` minus row ``b`` should have the paper's sign.

    ``table`` and ``a``/``b`` name the rows (see :func:`check_claims`); ``paper_a``/``paper_b`` are the paper's
    numbers when it reports them (``None``: a qualitative claim that ``a`` is higher).
    """

    text: str
    table: str
    metric: str
    a: str
    b: str
    paper_a: float | None = None
    paper_b: float | None = None

    @property
    def sign(self) -> float:
        """+1 when the paper has ``a`` above ``b``, -1 when below."""
        if self.paper_a is None or self.paper_b is None:
            return 1.0
        return math.copysign(1.0, self.paper_a - self.paper_b)


def paper_claim(text: str, table: str, metric: str, a: str, b: str) -> Claim:
    """A claim whose numbers come from :data:`PAPER_ABLATIONS` (rows ``a`` and ``b`` by their paper names)."""
    return Claim(text, table, metric, a, b, PAPER_ABLATIONS[a][metric], PAPER_ABLATIONS[b][metric])


#: The claims one adapter can answer: the methods of ``infinite-id eval`` (rows ``(prompt set, method)``).
EVAL_CLAIMS: tuple[Claim, ...] = (
    paper_claim("mixed attention raises CLIP-T", ALL_PROMPTS, "clip_t", "infinite-id", "no-mixed-attention"),
    paper_claim(
        "mixed attention costs a little ID similarity", ALL_PROMPTS, "face_sim", "infinite-id", "no-mixed-attention"
    ),
    paper_claim("mutual attention loses identity", ALL_PROMPTS, "face_sim", "infinite-id", "mutual-attention"),
    paper_claim("mutual attention lowers CLIP-T", ALL_PROMPTS, "clip_t", "infinite-id", "mutual-attention"),
    paper_claim("mutual attention lowers CLIP-I", ALL_PROMPTS, "clip_i", "infinite-id", "mutual-attention"),
    Claim("AdaIN-mean follows the style prompt better than no AdaIN", "style", "clip_t", "infinite-id", "no-adain"),
    Claim("full AdaIN costs identity against AdaIN-mean", "style", "face_sim", "infinite-id", "full-adain"),
)


#: Face metrics that count an image without a detected face as 0 (losing the face costs; it copies nothing).
ZERO_IF_NO_FACE = ("face_sim", "face_sim_other", "copy_paste_gap")


def metric_value(record: Mapping[str, Any], metric: str) -> float | None:
    """One image's value of ``metric``; ID similarity (to the reference or to other photos, and their gap) is 0
    where no face was detected (losing the face costs)."""
    value = record.get(metric)
    if metric in ZERO_IF_NO_FACE and "face_detected" in record and metric in record:
        return float(value) if record["face_detected"] and value is not None else 0.0
    return None if value is None else float(value)


def paired_values(records: Sequence[Mapping[str, Any]], metric: str) -> dict[tuple, float]:
    """``{(prompt set, identity, prompt, seed): value}``: what a paired difference matches on."""
    out = {}
    for r in records:
        value = metric_value(r, metric)
        if value is not None:
            out[(r.get("prompt_set"), r["identity"], r["prompt_index"], r["seed"])] = value
    return out


def paired_difference(
    a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], metric: str
) -> dict[str, float | int | None]:
    """``metric`` of ``a`` minus ``b`` over the images they share (same prompt set, identity, prompt and seed):
    ``summarize``'s mean, std, sem and n of the per-image differences."""
    values_a, values_b = paired_values(a, metric), paired_values(b, metric)
    return summarize([values_a[k] - values_b[k] for k in sorted(values_a.keys() & values_b.keys(), key=repr)])


def check_claims(
    claims: Sequence[Claim],
    rows: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
    min_effect: float = MIN_EFFECT,
) -> list[dict[str, Any]]:
    """Each claim's paired difference (mean, standard error, pairs) and verdict.

    ``rows`` maps ``(claim.table, row name)`` to that row's per-image records (one ID scale); a row that is
    missing has no pairs, so its claims come out ``unclear`` with ``n`` 0. Each result is the claim's fields plus
    ``difference``, ``sem``, ``n`` and ``verdict`` (the ``claims`` of ``results.json``).
    """
    out = []
    for claim in claims:
        stats = paired_difference(
            rows.get((claim.table, claim.a), ()), rows.get((claim.table, claim.b), ()), claim.metric
        )
        verdict = "unclear"
        if stats["n"] and stats["mean"] is not None:
            margin = max(2 * (stats["sem"] or 0.0), min_effect)
            if stats["mean"] * claim.sign > margin:
                verdict = "agrees"
            elif stats["mean"] * claim.sign < -margin:
                verdict = "disagrees"
        out.append(
            {**asdict(claim), "difference": stats["mean"], "sem": stats["sem"], "n": stats["n"], "verdict": verdict}
        )
    return out


def rows_by_method(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """An evaluation's records as claim rows: ``(prompt set, method)`` and ``(ALL_PROMPTS, method)``."""
    rows: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        rows.setdefault((r["prompt_set"], r["method"]), []).append(r)
        if r["prompt_set"] != ALL_PROMPTS:
            rows.setdefault((ALL_PROMPTS, r["method"]), []).append(r)
    return rows


def claims_for_methods(methods: Collection[str], claims: Sequence[Claim] = EVAL_CLAIMS) -> list[Claim]:
    """The claims whose two rows are both among ``methods`` (an evaluation checks only what it ran)."""
    return [c for c in claims if c.a in methods and c.b in methods]


def claims_markdown(
    results: Sequence[Mapping[str, Any]], measured: str = "ours", min_effect: float = MIN_EFFECT
) -> list[str]:
    """The claims section of a report: the rule, then one line per claim (``measured`` heads our column)."""
    lines = [
        "Paired differences (row a minus row b over the same identity, prompt and seed), mean ± standard error; "
        f"`agrees` / `disagrees`: beyond two standard errors and {min_effect} from 0, with the paper's sign / "
        "against it; `unclear` otherwise.",
        "",
        f"| claim | metric | {measured}: a - b | paper: a - b | verdict |",
        "|---|---|---|---|---|",
    ]
    for c in results:
        ours = "-" if c["difference"] is None else f"{c['difference']:+.3f} ± {c['sem'] or 0.0:.3f}"
        paper = "qualitative" if c["paper_a"] is None else f"{c['paper_a'] - c['paper_b']:+.3f}"
        lines.append(f"| {c['text']} | {c['metric']} | {ours} | {paper} | {c['verdict']} |")
    return lines
