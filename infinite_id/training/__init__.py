"""Identity-enhanced training of Infinite-ID adapters (paper section 2), on accelerate.

``infinite-id train-prepare SOURCE --out CACHE`` caches face embeddings and aligned crops once;
``infinite-id train CONFIG [--section.key=value ...]`` (or ``python -m infinite_id.train``, or under
``accelerate launch``) trains the mappers and ``to_k_ip``/``to_v_ip`` and exports the adapter in the
pipeline's format. See docs/training.md.
"""

from .config import ConfigError, TrainConfig, load_config
from .data import IdentityPairDataset, TrainCache, iter_source
from .preprocess import PrepareReport, prepare_cache

__all__ = [
    "ConfigError",
    "IdentityPairDataset",
    "PrepareReport",
    "TrainCache",
    "TrainConfig",
    "iter_source",
    "load_config",
    "main",
    "prepare_cache",
    "train",
]


def train(config, **kwargs):
    """Run training (see :func:`infinite_id.training.trainer.train`); imported lazily (it pulls diffusers)."""
    from .trainer import train as _train

    return _train(config, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m infinite_id.train CONFIG [--section.key=value ...]``."""
    import argparse
    import logging
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m infinite_id.train",
        description="Train an Infinite-ID adapter. Extra --section.key=value arguments override the config file.",
    )
    parser.add_argument("config", help="training config (.yaml or .toml), see configs/")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..errors import InfiniteIDError, one_line

    try:
        config = load_config(args.config, overrides)
        result = train(config)
    except InfiniteIDError as exc:  # what the user can fix: one line, as `infinite-id train` prints it
        print(f"Error: {one_line(exc)}", file=sys.stderr)
        return 2
    if result.adapter_path is not None:
        print(f"adapter: {result.adapter_path}")
    return 0
