"""Streaming shards: cache -> tar shards, the split across processes and workers, pairs, training and resume
from shards, and damaged shards."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_models import FACE_DIM

from infinite_id.faces.base import FaceEncoderInfo
from infinite_id.training.config import ConfigError, config_from_dict
from infinite_id.training.data import TrainCache
from infinite_id.training.shards import (
    ShardIndex,
    StreamingLoader,
    StreamingPairDataset,
    _embedding_from_bytes,
    read_shard,
    write_shards,
)

TEST_ENCODER = FaceEncoderInfo("precomputed", "test", FACE_DIM)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)


@pytest.fixture(scope="module")
def shards(identity_cache, tmp_path_factory) -> Path:
    """The shared cache (4 identities x 3 photos) as 4 shards of one identity each (a shard closes at 2+ photos)."""
    out = tmp_path_factory.mktemp("shards") / "shards"
    write_shards(identity_cache, out, shard_size=2)
    return out


def _dataset(index, processor, **kwargs) -> StreamingPairDataset:
    args = {"mode": "identity-enhanced", "resolution": 32, "seed": 0, "batch_size": 2, **kwargs}
    return StreamingPairDataset(index, processor, **args)


def _targets(dataset, epoch, ranks) -> list[list[str]]:
    return [[p.target.key for p in dataset.slot_stream(epoch, s)] for r in ranks for s in dataset.plan(r)]


# ---------------------------------------------------------------- writing


def test_cache_to_shards_round_trip(identity_cache, tmp_path):
    import webdataset as wds
    from typer.testing import CliRunner

    from infinite_id.cli import app

    cache = TrainCache.load(identity_cache)
    out = tmp_path / "shards"
    runner = CliRunner()
    res = runner.invoke(app, ["train-shards", str(identity_cache), str(out), "--shard-size", "5"])
    assert res.exit_code == 0, res.output
    assert "12 photos of 4 identities in 2 shards" in res.output  # a shard closes at an identity boundary
    index = ShardIndex.load(out)
    assert index.info["face_encoder"] == TEST_ENCODER.to_dict() and index.face_dim == FACE_DIM
    assert index.info["cache_version"] == cache.info["version"] and index.info["grouped_by_identity"]
    assert [s["samples"] for s in index.shards] == [6, 6] and index.samples == 12
    assert not list(out.glob(".*")) and index.check_files() == []  # temporaries renamed, sizes as listed

    seen = {}
    for shard in index.shards:
        identities = []
        for sample in read_shard(index.path(shard)):
            meta = json.loads(sample["json"])
            entry = cache.entries[meta["index"]]
            assert sample["__key__"] == f"{entry.index:09d}" and meta["identity"] == entry.identity
            assert sample["png"] == Path(entry.image).read_bytes()
            assert sample["crop.png"] == cache.crop_path(entry).read_bytes()
            assert torch.equal(_embedding_from_bytes(sample["emb.safetensors"]), cache.face_embeds[entry.index])
            seen[entry.index] = shard["name"]
            if not identities or identities[-1] != entry.identity:
                identities.append(entry.identity)
        assert len(identities) == len(set(identities)) == shard["identities"]  # one run per identity
    assert sorted(seen) == list(range(12))
    by_identity = {}
    for i, name in seen.items():
        by_identity.setdefault(cache.entries[i].identity, set()).add(name)
    assert all(len(names) == 1 for names in by_identity.values())  # an identity never spans shards

    # Plain webdataset reads them too.
    urls = [str(index.path(s)) for s in index.shards]
    keys = {s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}
    assert keys == {f"{i:09d}" for i in range(12)}

    res = runner.invoke(app, ["train-shards", str(identity_cache), str(out)])
    assert res.exit_code == 2 and "already holds an earlier" in res.output and "--overwrite" in res.output
    write_shards(identity_cache, out, shard_size=100, overwrite=True)
    assert [p.name for p in sorted(out.glob("*.tar"))] == ["shard-000000.tar"]  # the stale second shard went


def test_a_failing_shard_write_leaves_finished_shards_and_no_temporary(identity_cache, tmp_path, monkeypatch):
    import infinite_id.training.shards as shards_module

    real, calls = shards_module._shard_sample, []

    def sample_then_crash(cache, index):
        calls.append(index)
        if len(calls) == 10:  # the second shard is open, one identity written into it
            raise KeyboardInterrupt
        return real(cache, index)

    monkeypatch.setattr(shards_module, "_shard_sample", sample_then_crash)
    out = tmp_path / "shards"
    with pytest.raises(KeyboardInterrupt):
        write_shards(identity_cache, out, shard_size=5)
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar"]  # no manifest, no half-written shard


# ---------------------------------------------------------------- the stream


def test_split_across_two_ranks_and_two_workers_is_disjoint_and_complete(shards, processor):
    index = ShardIndex.load(shards)
    dataset = _dataset(index, processor, world_size=2, num_workers=2, shuffle_buffer=3)
    assert dataset.batches_per_epoch == 3 and len(StreamingLoader(dataset)) == 3  # 12 // (2 ranks x batch 2)
    covered = set()
    for epoch in range(4):
        slots = _targets(dataset, epoch, ranks=(0, 1))
        assert [len(s) for s in slots] == [4, 2, 4, 2]  # every rank: 3 batches; worker 0: 2, worker 1: 1
        keys = [k for s in slots for k in s]
        assert len(keys) == len(set(keys)) == 12  # disjoint; 12 = all, as 12 divides by 2 x 2
        covered |= set(keys)
        assert _targets(dataset, epoch, ranks=(0, 1)) == slots  # deterministic
    assert covered == {f"{i:09d}" for i in range(12)}
    assert _targets(dataset, 0, (0,)) != _targets(dataset, 1, (0,))  # a new order every epoch

    uneven = _dataset(index, processor, world_size=2, num_workers=1, batch_size=5)
    keys = [k for s in _targets(uneven, 0, (0, 1)) for k in s]
    assert len(keys) == len(set(keys)) == 10  # 12 // (2 x 5) = 1 batch each; the other 2 wait for another epoch


def test_data_loader_workers_interleave_and_skip_as_planned(shards, processor):
    """Real worker processes: batch j of a rank comes from worker j % workers; skipping k batches resumes there."""
    index = ShardIndex.load(shards)
    dataset = _dataset(index, processor, world_size=1, num_workers=2, shuffle_buffer=2, id_dropout=0.3)
    loader = StreamingLoader(dataset, num_workers=2)
    batches = list(loader.epoch(1))
    assert len(batches) == len(loader) == 6
    streams = [[dataset.decode(p) for p in dataset.slot_stream(1, s)] for s in dataset.plan()]
    for j, batch in enumerate(batches):
        expected = streams[j % 2][2 * (j // 2) : 2 * (j // 2) + 2]
        assert torch.equal(batch["pixel_values"], torch.stack([e["pixel_values"] for e in expected]))
        assert torch.equal(batch["face_embeds"], torch.stack([e["face_embeds"] for e in expected]))
    for skip in (1, 4):  # after an odd skip the DataLoader's worker 0 must play the other slot
        resumed = list(loader.epoch(1, skip=skip))
        assert len(resumed) == 6 - skip
        for a, b in zip(resumed, batches[skip:], strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a if k != "caption")


def test_pairs_are_the_same_identity_on_different_photos(identity_cache, processor, tmp_path, caplog):
    cache = TrainCache.load(identity_cache)
    solo = cache.entries[0].__class__(**{**cache.entries[0].__dict__, "identity": "solo", "index": 12})
    cache.entries.append(solo)
    cache.face_embeds = torch.cat([cache.face_embeds, cache.face_embeds[:1]])
    write_shards(cache, tmp_path / "shards", shard_size=4)
    index = ShardIndex.load(tmp_path / "shards")
    assert index.info["single_photo_identities"] == 1

    dataset = _dataset(index, processor, batch_size=1, shuffle_buffer=4)
    assert "1 of 5 identities have a single photo" in caplog.text
    refs = {}
    (slot,) = dataset.plan()
    for epoch in range(20):
        for pair in dataset.slot_stream(epoch, slot):
            assert pair.ref.identity == pair.target.identity
            solo = pair.target.identity == "solo"
            assert (pair.ref.key == pair.target.key) == solo  # different photos; the counted fallback for solo
            if epoch == 0:
                assert bool(dataset.decode(pair)["same_photo"]) == solo
            refs.setdefault(pair.target.key, set()).add(pair.ref.key)
    del refs["000000012"]
    assert all(len(r) == 2 for r in refs.values())  # both other photos get used over epochs

    joint = _dataset(index, processor, mode="joint", batch_size=1)
    pairs = list(joint.slot_stream(0, joint.plan()[0]))
    assert len(pairs) == 13 and all(p.ref.key == p.target.key for p in pairs)
    assert all(joint.decode(p)["caption"].startswith("photo ") for p in pairs[:3])


def test_damaged_shards_are_skipped_and_reported(identity_cache, processor, tmp_path, caplog):
    out = tmp_path / "shards"
    write_shards(identity_cache, out, shard_size=3)
    index = ShardIndex.load(out)
    first, second = (index.path(s) for s in index.shards[:2])
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 3])  # truncated mid-shard
    second.write_bytes(b"\x00not a tar" * 100)
    assert len(index.check_files()) == 2

    dataset = _dataset(index, processor, batch_size=2)
    for epoch in range(2):
        (slot,) = dataset.plan()
        pairs = list(dataset.slot_stream(epoch, slot))
        assert len(pairs) == slot.count == 12  # the quota is filled from the readable shards
        assert all(p.ref.identity == p.target.identity for p in pairs)
        dataset.decode(pairs[0])
    assert any(first.name in p for p in dataset.problems) and any(second.name in p for p in dataset.problems)
    assert "damaged shard skipped" in caplog.text

    for shard in index.shards:  # nothing readable at all: a clear error, not an endless loop
        index.path(shard).write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="no readable sample"):
        list(dataset.slot_stream(0, dataset.plan()[0]))


# ---------------------------------------------------------------- training


def test_config_takes_exactly_one_data_source():
    base = {"model": {"pretrained": "m"}}
    assert config_from_dict({**base, "data": {"shards": "s"}}).data.shards == "s"
    for data in ({"cache": "c", "shards": "s"}, {}):
        with pytest.raises(ConfigError, match="exactly one of data.cache"):
            config_from_dict({**base, "data": data})


def _shard_config(make_config, shards, out, validation=None, **train):
    return make_config(
        out=out,
        validation=validation or {},
        data={"cache": "", "shards": str(shards), "shuffle_buffer": 3, "random_flip": True},
        train={"max_steps": 8, "id_dropout": 0.3, "lr_scheduler": "cosine", "gradient_accumulation_steps": 2, **train},
        output={"checkpoint_every": 3, "keep_checkpoints": 2},
    )


def test_train_from_shards_kill_and_resume_and_export(make_config, shards, tiny_model_dirs, tmp_path):
    from infinite_id.pipelines import InfiniteIDPipeline
    from infinite_id.training.trainer import train

    validation = {"every": 8, "num_references": 2, "num_inference_steps": 1}
    reference = train(_shard_config(make_config, shards, tmp_path / "full", validation))
    assert reference.global_step == 8 and all(math.isfinite(x) for x in reference.losses)
    grid = Image.open(tmp_path / "full" / "validation" / "step-00000008.png")
    assert grid.size == (2 * 32, 2 * 32)  # 2 references (crop + 1 prompt each), found across the first shards
    assert reference.dataset["shards"] == 4  # 16 micro-batches at 6 per epoch: two epoch boundaries crossed

    class Killed(Exception):
        pass

    def kill_at_5(step, loss):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(_shard_config(make_config, shards, tmp_path / "a"), step_callback=kill_at_5)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed = train(_shard_config(make_config, shards, tmp_path / "a"))
    assert resumed.resumed_from.name == "step-00000003"
    assert resumed.losses == reference.losses[3:]
    expected, got = load_file(str(reference.adapter_path)), load_file(str(resumed.adapter_path))
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)

    pipe = InfiniteIDPipeline.from_pretrained(tiny_model_dirs["sd15"])
    metadata = pipe.load_adapter(reference.adapter_path)
    assert metadata.face_encoder == TEST_ENCODER and metadata.training["shards"] == shards.name  # a name, not a path


def test_two_process_cpu_launch_from_shards(tiny_model_dirs, shards, tmp_path):
    """DDP over gloo: each process streams its own part of the shards; equal batch counts keep them in step."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
        *("-m", "infinite_id.train", str(REPO / "configs" / "tiny.yaml")),
        f"--model.pretrained={tiny_model_dirs['sd15']}",
        "--data.cache=",
        f"--data.shards={shards}",
        f"--output.dir={out}",
        "--train.max_steps=4",  # 3 batches per process per epoch: crosses an epoch boundary
    ]
    try:
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"2-process launch from shards did not finish in 240 s:\n{(exc.stderr or '')[-3000:]}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"accelerate launch failed (rc {proc.returncode}):\n{log[-4000:]}"
    assert "3 micro-batches per epoch per process, global batch 4" in log, log[-3000:]
    assert (out / "infinite_id_adapter.safetensors").is_file()
