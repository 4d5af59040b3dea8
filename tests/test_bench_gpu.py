"""``bench/gpu.py --dry-run``: the GPU benchmark runs end to end on CPU with a tiny UNet, so it cannot rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_dry_run_prints_one_table_of_every_variant_dtype_and_mode(capsys):
    text = _load().main(["--dry-run", "--repeats", "1"])
    assert text in capsys.readouterr().out
    assert "DRY RUN" in text.splitlines()[0]
    rows = [r for r in _rows(text) if r[0] != "dtype"]
    fast = "fast (20% two-stream calls)"
    for dtype in ("bfloat16", "float16"):
        for mode in ("eager", "compile (eager)"):
            got = {r[2]: r for r in rows if r[0] == dtype and r[1] == mode}
            assert list(got) == ["plain", "identity", "two-stream", fast], (dtype, mode, list(got))
            assert got["plain"][5] == "1.00x"
            step = {v: float(r[4]) for v, r in got.items()}
            low, high = sorted((step["identity"], step["two-stream"]))
            assert low <= step[fast] <= high  # the preset's step is a mix of the two measured ones
            gflop = {v: float(r[8]) for v, r in got.items()}
            assert gflop["plain"] < gflop["identity"] < gflop[fast] < gflop["two-stream"]
            assert all(r[9].endswith("%") for r in got.values())  # MFU against the measured matmul peak


def test_without_a_gpu_the_full_run_says_so():
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit):
        _load().main([])
