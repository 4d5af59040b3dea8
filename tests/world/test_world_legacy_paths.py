"""The world's module paths from before its subpackages keep working for one release: the same module objects for
imports, the same commands for ``python -m``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from infinite_id.world.legacy_paths import MOVED_MODULES

ROOT = Path(__file__).resolve().parents[2]


def test_every_old_path_names_a_module_that_exists():
    for new in MOVED_MODULES.values():
        assert importlib.util.find_spec(f"infinite_id.world.{new}") is not None, new


def test_an_old_import_path_is_the_moved_module_itself_with_a_warning():
    from infinite_id.world.scene import factors

    sys.modules.pop("infinite_id.world.factors", None)
    with pytest.warns(DeprecationWarning, match=r"infinite_id\.world\.factors moved to infinite_id\.world\.scene"):
        old = importlib.import_module("infinite_id.world.factors")
    assert old is factors and old.__spec__.name == "infinite_id.world.scene.factors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from infinite_id.world.retrain import retrain

        from infinite_id.world.trainers.retrain import retrain as moved
    assert retrain is moved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from infinite_id.world import weights  # not the weights/ folder beside it, as a namespace package
    assert weights.__name__ == "infinite_id.world.models.weights" and weights.DEFAULT_WEIGHTS_DIR.name == "weights"


@pytest.mark.parametrize("old", ["retrain", "ceilings", "weights"])  # weights: a folder of that name stays there
def test_an_old_command_path_runs_the_moved_command(old):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", f"infinite_id.world.{old}", "--help"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_the_world_identity_answers_to_its_old_name():
    from infinite_id.world.scene.factors import IdentityFactors

    with pytest.warns(DeprecationWarning, match="renamed IdentityFactors"):
        from infinite_id.world import Identity
    assert Identity is IdentityFactors
