"""The speed benchmark's building blocks on a tiny UNet (behaviour only: numbers belong in BENCHMARKS.md)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from infinite_id.cli import app
from infinite_id.evaluation import speed


def test_variants_batch_layout_and_flops():
    flops = {}
    for variant, rows in (("plain", 2), ("identity", 2), ("two-stream", 4)):
        unet = speed.build_unet("tiny", "cpu", torch.float32)
        inputs, got = speed.prepare_variant(unet, variant, "tiny", 1, 64, "cpu", torch.float32)
        assert got == rows == inputs["sample"].shape[0]
        flops[variant], shareable = speed.count_flops(unet, inputs)
        assert 0 < shareable < flops[variant]
    # the identity stream adds the image cross-attention; the two-stream step is a text stream (plain) plus an
    # identity stream plus the extra keys of mixed attention
    assert flops["plain"] < flops["identity"]
    assert flops["two-stream"] > flops["plain"] + flops["identity"]


def test_bench_command_reports_ratios(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--unet", "tiny", "--size", "64", "--batch-sizes", "1", "--variants", "plain,two-stream"]
    args += ["--repeats", "1", "--warmup", "1", "--threads", "1", "--json", str(out), "--in-process"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| 1 | two-stream | 4 |" in result.output
    assert "1.00x" in result.output  # plain against itself
    assert "| 1 | fast (20% two-stream calls) | 4/2 |" not in result.output  # needs the identity step too
    result = CliRunner().invoke(app, [*args[:8], "plain,identity,two-stream", *args[9:]])
    assert result.exit_code == 0, result.output
    assert "| 1 | fast (20% two-stream calls) | 4/2 |" in result.output  # beside the exact mode (two-stream)
    assert out.is_file()


@pytest.mark.parametrize("option", ["sdpa-math", "channels-last"])
def test_speedup_options_run_in_process(option):
    config = dict(unet="tiny", device="cpu", dtype="float32", size=64, repeats=1, warmup=1, threads=1)
    result = speed.measure({**config, "variant": "two-stream", "batch": 1, "option": option, "flops": False})
    assert "error" not in result and result["step_s"] > 0 and result["rows"] == 4


def test_flops_table_on_the_meta_device():
    text = speed.flops_table("tiny", 64, [1])
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| 1 |")]
    assert [r[2].strip() for r in rows] == ["plain", "identity", "two-stream", "fast (20% two-stream calls)"]
    ratios = [float(r[6].strip().rstrip("x")) for r in rows]
    assert ratios[0] == 1.0 and 1.0 < ratios[1] < 1.2 and ratios[2] > 2.0
    assert ratios[3] == pytest.approx(0.2 * ratios[2] + 0.8 * ratios[1], abs=2e-3)


def test_round_robin_times_every_call_in_turn():
    order = []
    times = speed.round_robin({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b"] * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3} and min(times["a"] + times["b"]) >= 0


def test_fast_mode_row_mixes_the_measured_steps_by_the_presets_call_share():
    assert speed.fast_mode_share(30) == pytest.approx(0.2)  # mixed attention over the first 6 of 30 calls
    assert speed.fast_mode_share(20, window_end=0.5) == pytest.approx(0.5)
    results = [
        {"batch": 1, "variant": "plain", "rows": 2, "step_s": 1.0},
        {"batch": 1, "variant": "identity", "rows": 2, "step_s": 1.1, "flops": 10.0, "peak_mib": 5.0},
        {"batch": 1, "variant": "two-stream", "rows": 4, "step_s": 2.1, "flops": 20.0, "peak_mib": 9.0},
    ]
    row = speed.fast_mode_row(results, 1, 0.25)
    assert row["step_s"] == pytest.approx(0.25 * 2.1 + 0.75 * 1.1) and row["flops"] == pytest.approx(12.5)
    assert row["peak_mib"] == 9.0 and row["rows"] == "4/2"
    assert speed.fast_mode_row(results[:2], 1, 0.25) is None  # needs both measured steps
