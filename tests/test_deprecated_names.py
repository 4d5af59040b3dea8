"""Renamed public names and moved modules keep working for one release, each with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys

import pytest

from infinite_id.deprecation import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_a_moved_module_is_found_at_its_old_path(old):
    new = importlib.import_module(MOVED_MODULES[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="moved to"):
        module = importlib.import_module(old)
    assert module is new and module.__spec__.name == MOVED_MODULES[old]  # the module itself, its own spec kept


def test_renamed_classes_answer_to_their_old_names():
    from infinite_id.evaluation import EvaluationIdentity
    from infinite_id.generation import ReferenceIdentity

    with pytest.warns(DeprecationWarning, match="renamed ReferenceIdentity"):
        from infinite_id.generation import Identity
    assert Identity is ReferenceIdentity
    with pytest.warns(DeprecationWarning, match="renamed EvaluationIdentity"):
        from infinite_id.evaluation import Identity as EvalIdentity
    assert EvalIdentity is EvaluationIdentity
    with pytest.raises(ImportError):
        from infinite_id.generation import NoSuchName  # noqa: F401


def test_deprecated_default_model_helpers_still_answer():
    from infinite_id import defaults

    assert defaults.miniature_model_available() == defaults.default_model_available()
