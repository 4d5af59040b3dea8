"""Render speed of the miniature world: portraits per second on one core, per style and overall.

Prints CPU time (process time, less sensitive to other jobs on a shared machine) and wall time.
Usage: python bench/render_speed.py [--count 300] [--size 64] [--supersample 2]
"""

from __future__ import annotations

import argparse
import platform
import time

from infinite_id.world.scene.factors import STYLES, Nuisance, Semantics, identity_from_id, nuisance_rng, semantics_rng
from infinite_id.world.scene.render import render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="renders per style")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--supersample", type=int, default=2)
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"{time.strftime('%Y-%m-%d')}  {machine}  python {platform.python_version()}")
    print(f"size {args.size}, supersample {args.supersample}, {args.count} renders per style, one process")
    total_cpu = total_wall = 0.0
    for style in STYLES:
        jobs = [
            (identity_from_id(i), Semantics.sample(semantics_rng(i), {style: 1.0}), Nuisance.sample(nuisance_rng(i)))
            for i in range(args.count)
        ]
        render(*jobs[0], size=args.size, supersample=args.supersample)  # warm caches
        cpu, wall = time.process_time(), time.perf_counter()
        for job in jobs:
            render(*job, size=args.size, supersample=args.supersample)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        total_cpu, total_wall = total_cpu + cpu, total_wall + wall
        print(f"{style:>13}: {args.count / cpu:7.0f} renders/s CPU   {args.count / wall:7.0f} renders/s wall")
    n = args.count * len(STYLES)
    print(f"{'all':>13}: {n / total_cpu:7.0f} renders/s CPU   {n / total_wall:7.0f} renders/s wall")


if __name__ == "__main__":
    main()
