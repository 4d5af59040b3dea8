"""``infinite-id bench``: speed and memory of plain diffusers vs identity stream only vs two-stream Infinite-ID."""

from __future__ import annotations

import typer

from . import app


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def bench_command(ctx: typer.Context) -> None:
    """Per-step time, images/s, peak memory and MFU as ratios measured in one run (--help lists the options)."""
    from ..evaluation.speed import main

    main(list(ctx.args))
