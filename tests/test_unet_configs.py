"""UNet shapes live once: the speed benchmark, the training benchmark and the test models read the same table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from infinite_id.models.unet_configs import UNET_CONFIGS, unet_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_speed_benchmark_reads_the_shared_shapes():
    from infinite_id.evaluation import speed

    for kind in ("tiny", "mid", "sdxl"):
        assert speed.unet_config(kind) == UNET_CONFIGS[kind]
    with pytest.raises(ValueError, match="unknown UNet"):
        speed.unet_config("tiny-sd15")  # not one the benchmark reports


def test_a_config_is_a_copy_with_overrides():
    config = unet_config("mid-sd15", cross_attention_dim=64)
    assert config["cross_attention_dim"] == 64 and UNET_CONFIGS["mid-sd15"]["cross_attention_dim"] == 32
    config["block_out_channels"] = ()
    assert UNET_CONFIGS["mid-sd15"]["block_out_channels"] == (128, 256, 384)


@pytest.mark.parametrize("path", ["bench/train_speed.py", "infinite_id/evaluation/speed.py", "infinite_id/testing.py"])
def test_no_other_file_spells_out_a_unet_shape(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    keywords = {k.arg for node in ast.walk(tree) if isinstance(node, ast.Call) for k in node.keywords}
    keys = {k.value for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys
            if isinstance(k, ast.Constant)}  # fmt: skip
    assert "layers_per_block" not in keywords | keys  # a UNet shape spelled out
