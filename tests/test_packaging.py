"""Installation metadata: torch is a range (an install next to a user's CUDA torch keeps it), the exact CPU build
lives in the constraints file the README's commands and CI pass, and peft is an extra."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAIN_JOB = (
    'infinite-id generate --ref examples/portraits/woman_1.png --prompt "a photo of a woman wearing a yellow '
    'sweater, on the beach"'
)


def _requirement(lines: list[str], name: str) -> Requirement:
    found = [Requirement(line) for line in lines if Requirement(line).name == name]
    assert len(found) == 1, f"{name} must be declared once, found {found}"
    return found[0]


def test_torch_is_a_range_that_keeps_an_installed_torch_2():
    torch_req = _requirement(PYPROJECT["project"]["dependencies"], "torch")
    for version in ("2.3.0", "2.4.1", "2.5.1+cu124", "2.7.0", "2.13.0"):
        assert torch_req.specifier.contains(version, prereleases=True), version
    for version in ("1.13.1", "3.0.0"):
        assert not torch_req.specifier.contains(version), version


def test_the_cpu_pin_lives_in_the_constraints_file_the_commands_pass():
    lines = [
        line.strip()
        for line in (ROOT / "constraints-cpu.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pin = _requirement(lines, "torch")
    assert str(pin.specifier) == "==2.13.0"
    assert _requirement(PYPROJECT["project"]["dependencies"], "torch").specifier.contains("2.13.0")
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick_start, flags=re.S)
    assert len(commands) == 2, "the quick start stays two commands"
    assert all(c.startswith("pip install") and "-c constraints-cpu.txt" in c for c in commands)
    assert MAIN_JOB in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    installs = [line for line in ci.splitlines() if "pip install" in line and " -e " in line]
    assert len(installs) == 2 and all("-c constraints-cpu.txt" in line for line in installs)
    assert f"{MAIN_JOB} --out outputs/ci --also-text-stream" in ci


def test_peft_is_an_extra_with_a_clear_message_when_missing(monkeypatch, make_pipe):
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "peft" not in {Requirement(r).name for r in PYPROJECT["project"]["dependencies"]}
    assert _requirement(extras["lora"], "peft")
    assert "lora" in Requirement(extras["all"][0]).extras

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    pipe = make_pipe("sd15", adapter=False)
    with pytest.raises(ImportError, match=r"infinite-id\[lora\]"):
        pipe.load_lora_weights("some/lora")
