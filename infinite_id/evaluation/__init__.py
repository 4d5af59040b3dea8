"""Evaluation of Infinite-ID and its ablations: the paper's metrics, prompt sets, a resumable runner, reports and
the paper's claims checked.

See ``docs/evaluation.md``; the command line is ``infinite-id eval``.
"""

from ..deprecation import renamed_names
from .claims import EVAL_CLAIMS, Claim, check_claims
from .methods import DEFAULT_METHODS, METHODS, Method, resolve_methods
from .metrics import (
    ClipScorer,
    DinoScorer,
    FaceScore,
    FaceSimilarity,
    NoReferenceFaceError,
    choose_face_backend,
    cosine_matrix,
    summarize_face_scores,
)
from .prompt_sets import BUILTIN_PROMPT_SETS, PromptSet, load_prompt_file, resolve_prompt_sets
from .report import write_report
from .runner import (
    EvalSettings,
    EvaluationIdentity,
    EvaluationRunner,
    ResumeMismatchError,
    load_identities,
    read_records,
)

__all__ = [
    "BUILTIN_PROMPT_SETS",
    "DEFAULT_METHODS",
    "EVAL_CLAIMS",
    "METHODS",
    "Claim",
    "ClipScorer",
    "DinoScorer",
    "EvalSettings",
    "EvaluationIdentity",
    "EvaluationRunner",
    "FaceScore",
    "FaceSimilarity",
    "Method",
    "NoReferenceFaceError",
    "PromptSet",
    "ResumeMismatchError",
    "check_claims",
    "choose_face_backend",
    "cosine_matrix",
    "load_identities",
    "load_prompt_file",
    "read_records",
    "resolve_methods",
    "resolve_prompt_sets",
    "summarize_face_scores",
    "write_report",
]


__getattr__ = renamed_names(__name__, {"Identity": "EvaluationIdentity"}, globals())  # deprecated alias, one release
