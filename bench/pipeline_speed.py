"""Speed and memory of one denoising step: plain diffusers UNet vs identity stream only vs two-stream Infinite-ID.

The implementation lives in ``infinite_id.evaluation.speed`` so that ``infinite-id bench`` runs the same code;
see its docstring and BENCHMARKS.md ("Pipeline speed").

    python bench/pipeline_speed.py                                        # CPU, mid-size UNet, 256 px
    python bench/pipeline_speed.py --speedups --json results.json         # + SDPA backends, channels-last, compile
    python bench/pipeline_speed.py --unet sdxl --device cuda --dtype bfloat16 --size 1024 --speedups   # GPU
"""

from infinite_id.evaluation.speed import main

if __name__ == "__main__":
    main()
