"""The identity loss (``train.identity_loss_weight``): the predicted clean latents, the differentiable box crop,
the encoder registry and its config errors, and the term in the training loss (off: unchanged; on: gradients
reach the adapter and nothing frozen)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from boxed_data import TEST_ENCODER
from torch import nn

from infinite_id.training.config import ConfigError, load_config
from infinite_id.training.identity_loss import (
    IDENTITY_ENCODER_REGISTRY,
    DifferentiableFaceEncoder,
    face_box_crop,
    load_identity_encoder,
    register_identity_encoder,
)
from infinite_id.training.losses import identity_cosine_loss, predicted_clean_latents


class ToyFaceEncoder(nn.Module):
    """A fixed random convnet on a 16 px box crop: differentiable, deterministic, cheap."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Linear(8 * 4 * 4, 16)
        self.calls = 0

    def forward(self, pixels: torch.Tensor, face_boxes: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        features = F.avg_pool2d(torch.tanh(self.conv(face_box_crop(pixels, face_boxes, 16))), 4)
        return F.normalize(self.head(features.flatten(1)), dim=-1)


@pytest.fixture
def toy_encoder():
    """``toy`` registered in-process (an editable install's metadata may predate any entry point)."""
    register_identity_encoder("toy", ToyFaceEncoder)
    yield "toy"
    IDENTITY_ENCODER_REGISTRY.unregister("toy")


def _identity_config(make_config, boxed_cache, **train):
    values = {"identity_loss_weight": 0.5, "identity_loss_encoder": "toy", **train}
    return make_config(data={"cache": str(boxed_cache)}, train=values)


# ---------------------------------------------------------------- pure functions


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_clean_latents_match_diffusers(prediction_type):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    timesteps = torch.tensor([0, 399, 999])
    noisy = scheduler.add_noise(x0, eps, timesteps)
    target = eps if prediction_type == "epsilon" else scheduler.get_velocity(x0, eps, timesteps)
    # The exact prediction inverts add_noise ...
    recovered = predicted_clean_latents(noisy, target, timesteps, scheduler.alphas_cumprod, prediction_type)
    assert torch.allclose(recovered[:2], x0[:2], atol=1e-4)
    assert torch.allclose(recovered[2], x0[2], atol=2e-2)  # t = 999: sqrt(a) ~ 0.07 amplifies float error
    # ... and any prediction gives what DDPMScheduler.step calls pred_original_sample, per sample's timestep.
    output = torch.randn(3, 4, 8, 8, generator=g)
    ours = predicted_clean_latents(noisy, output, timesteps, scheduler.alphas_cumprod, prediction_type)
    for i, t in enumerate(timesteps.tolist()):
        step = scheduler.step(output[i : i + 1], t, noisy[i : i + 1], generator=torch.Generator().manual_seed(0))
        assert torch.allclose(ours[i : i + 1], step.pred_original_sample, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="epsilon or v_prediction"):
        predicted_clean_latents(noisy, output, timesteps, scheduler.alphas_cumprod, "sample")


def test_face_box_crop_places_the_box_and_is_differentiable():
    image = torch.randn(1, 3, 32, 32, requires_grad=True)
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    assert torch.allclose(face_box_crop(image, box, 16), image[..., 8:24, 8:24], atol=1e-5)  # same pixels
    # Half the size: the average of each 2 x 2 block (supersampled, not aliased).
    assert torch.allclose(face_box_crop(image, box, 8), F.avg_pool2d(image[..., 8:24, 8:24], 2), atol=1e-5)
    # The box on the middle half of the crop: the crop is the whole image.
    assert torch.allclose(face_box_crop(image, box, 32, (0.25, 0.25, 0.75, 0.75)), image, atol=1e-5)
    # A box clipped at the border keeps the side its other dimension implies (outside the image: zeros).
    clipped = face_box_crop(image, torch.tensor([[0.0, 0.25, 0.25, 0.75]]), 16)
    assert torch.allclose(clipped[..., :, 4:], image[..., 8:24, :12], atol=1e-5)  # centred on the box: x from -4
    assert torch.equal(clipped[..., :, :4], torch.zeros(1, 3, 16, 4))
    face_box_crop(image, box, 16).sum().backward()
    assert image.grad[..., 8:24, 8:24].abs().min() > 0 and image.grad[..., :8, :].abs().max() == 0


def test_identity_cosine_loss():
    a = F.normalize(torch.randn(3, 8), dim=-1)
    assert identity_cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_cosine_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)
    empty = identity_cosine_loss(a[:0], a[:0])
    assert empty.item() == 0.0 and torch.isfinite(empty)


# ---------------------------------------------------------------- registry and configuration


def test_registered_encoders_load_frozen(toy_encoder):
    encoder = load_identity_encoder(toy_encoder, "cpu")
    assert isinstance(encoder, DifferentiableFaceEncoder) and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ConfigError, match="'nope', which is not registered; choose one of .*toy"):
        load_identity_encoder("nope", "cpu")


def test_config_errors_name_the_registered_encoders(toy_encoder):
    with pytest.raises(ConfigError, match="identity_loss_encoder, and it is not set; choose one of .*toy"):
        load_config(overrides=["model.pretrained=x", "data.cache=c", "train.identity_loss_weight=1"])
    with pytest.raises(ConfigError, match="'arcface', which is not registered; choose one of .*toy"):
        load_config(overrides=["model.pretrained=x", "data.cache=c", "train.identity_loss_weight=1",
                               "train.identity_loss_encoder=arcface"])  # fmt: skip
    for bad, message in (("identity_loss_weight=-1", "must be >= 0"), ("identity_loss_max_timestep=-1", ">= 0")):
        with pytest.raises(ConfigError, match=message):
            load_config(overrides=["model.pretrained=x", "data.cache=c", f"train.{bad}"])
    # Off (weight 0), the encoder is not looked at: the paper's rows need none.
    load_config(overrides=["model.pretrained=x", "data.cache=c", "train.identity_loss_encoder=arcface"])


def test_config_errors_come_before_any_model_loads(make_config, toy_encoder, monkeypatch):
    from infinite_id.training import trainer

    monkeypatch.setattr(trainer, "load_components", lambda *a, **k: pytest.fail("a model was loaded"))
    config = make_config(train={"identity_loss_weight": 1.0, "identity_loss_encoder": "toy"})
    config.train.identity_loss_encoder = "unknown"  # changed after loading: train() validates again
    with pytest.raises(ConfigError, match="'unknown', which is not registered"):
        trainer.train(config)
    config.train.identity_loss_encoder = "toy"  # the default cache has no face boxes
    with pytest.raises(ConfigError, match="identity_loss_weight=1.0 needs face boxes"):
        trainer.train(config)


# ---------------------------------------------------------------- the training loss


@pytest.fixture
def loss_setup(make_config, boxed_cache, toy_encoder):
    """Components, model, conditioning and a batch of 4 boxed photos, with the identity loss on."""
    from infinite_id.training.adapter_model import AdapterTrainingModel, load_components
    from infinite_id.training.data import IdentityPairDataset, TrainCache, collate_pairs
    from infinite_id.training.trainer import _Conditioning

    cfg = _identity_config(make_config, boxed_cache, identity_loss_max_timestep=1000)
    comps = load_components(cfg, TEST_ENCODER, torch.float32)
    dataset = IdentityPairDataset(
        TrainCache.load(boxed_cache), comps.pipe.feature_extractor, "identity-enhanced", 32, seed=0
    )
    model = AdapterTrainingModel(comps.pipe.unet, comps.projection, comps.pipe.image_encoder)
    batch = collate_pairs([dataset[(0, i)] for i in range(4)])
    return cfg, comps, model, _Conditioning(comps, cfg, torch.device("cpu")), batch


def test_weight_zero_leaves_the_loss_bit_identical(loss_setup):
    from infinite_id.training.trainer import diffusion_loss, loss_terms

    cfg, comps, model, cond, batch = loss_setup
    with torch.no_grad():
        on = loss_terms(model, comps, cond, batch, torch.Generator().manual_seed(0), cfg)
        cfg.train.identity_loss_weight = 0.0
        calls = comps.identity_encoder.calls
        off = loss_terms(model, comps, cond, batch, torch.Generator().manual_seed(0), cfg)
        plain = diffusion_loss(model, comps, cond, batch, torch.Generator().manual_seed(0), cfg)
    assert set(off) == {"loss"} and set(on) == {"loss", "diffusion", "identity"}
    assert comps.identity_encoder.calls == calls  # off: the encoder is not run
    assert torch.equal(off["loss"], on["diffusion"]) and torch.equal(plain, on["diffusion"])
    assert torch.equal(on["loss"], on["diffusion"] + 0.5 * on["identity"]) and on["identity"] > 0


def test_identity_gradients_reach_the_adapter_only(loss_setup):
    from infinite_id.training.trainer import loss_terms

    cfg, comps, model, cond, batch = loss_setup
    terms = loss_terms(model, comps, cond, batch, torch.Generator().manual_seed(0), cfg)
    assert torch.isfinite(terms["loss"]) and 0 < terms["identity"].item() <= 2
    terms["identity"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert sum(p.grad.abs().sum().item() for p in trainable) > 0
    frozen = [*comps.pipe.vae.parameters(), *comps.pipe.unet.parameters(), *comps.identity_encoder.parameters()]
    frozen = [p for p in frozen if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)


def test_only_low_timesteps_with_a_face_box_contribute(loss_setup):
    from infinite_id.training.trainer import identity_term

    cfg, comps, model, cond, batch = loss_setup
    cfg.train.identity_loss_max_timestep = 400
    pixels = batch["pixel_values"][:3]
    with torch.no_grad():
        shape = comps.pipe.vae.encode(pixels).latent_dist.mean.shape
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(shape, generator=g)
    pred = torch.randn(shape, generator=g, requires_grad=True)
    boxes = torch.tensor([[0.2, 0.2, 0.7, 0.8], [0.2, 0.2, 0.7, 0.8], [0.0, 0.0, 0.0, 0.0]])
    timesteps = torch.tensor([100, 401, 50])  # sample 1: too noisy; sample 2: no face
    mixed = identity_term(comps, noisy, pred, timesteps, pixels, boxes, cfg)
    alone = identity_term(comps, noisy[:1], pred[:1], timesteps[:1], pixels[:1], boxes[:1], cfg)
    assert torch.allclose(mixed, alone) and mixed > 0
    mixed.backward()
    assert pred.grad[0].abs().sum() > 0 and pred.grad[1:].abs().sum() == 0
    calls = comps.identity_encoder.calls
    for t, b in ((torch.tensor([401, 999, 500]), boxes), (torch.tensor([0, 1, 2]), torch.zeros(3, 4))):
        none = identity_term(comps, noisy, pred, t, pixels, b, cfg)
        assert none.item() == 0.0 and torch.isfinite(none)
    assert identity_term(comps, noisy, pred, timesteps, pixels, None, cfg).item() == 0.0
    assert comps.identity_encoder.calls == calls  # nothing decoded or encoded


def test_a_short_run_with_the_identity_loss_trains_and_logs_it(make_config, boxed_cache, toy_encoder, monkeypatch):
    from accelerate import Accelerator

    from infinite_id.training.trainer import train

    logged = []
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, log_kwargs=None: logged.append(values))
    result = train(_identity_config(make_config, boxed_cache, max_steps=2, identity_loss_max_timestep=1000))
    assert result.global_step == 2 and all(np.isfinite(result.losses)) and result.adapter_path.is_file()
    assert len(logged) == 2 and all({"loss", "loss_diffusion", "loss_identity"} <= set(v) for v in logged)
    assert all(v["loss_identity"] > 0 for v in logged)


@pytest.mark.world
def test_the_world_encoder_on_a_mini_face_box_matches_the_aligned_crop():
    """On the box the ``mini`` analyzer derives from the landmarks, the box crop embeds as the landmark-aligned
    crop does, up to the head's roll (measured: cosine 0.91 on average over these renders; other identities: 0)."""
    import infinite_id.world.identity_loss  # noqa: F401  (registers "mini" in-process)
    from infinite_id.world import sample_example
    from infinite_id.world.face_backend import MiniFaceAnalyzer
    from infinite_id.world.models.face_model import align_world_face, crops_to_tensor

    encoder = load_identity_encoder("mini", "cpu")
    analyzer = MiniFaceAnalyzer()
    examples = [sample_example(i, np.random.default_rng([7, i])) for i in range(8)]
    side = examples[0].image.size[0]
    boxes = torch.tensor(
        [analyzer.face_from_landmarks(np.array(e.layout.landmarks), 1.0, e.image.size).box for e in examples]
    )
    pixels = crops_to_tensor([e.image for e in examples]).requires_grad_(True)
    ours = encoder(pixels, boxes / side)
    with torch.no_grad():
        aligned = analyzer.encoder(crops_to_tensor([align_world_face(e.image, e.layout.landmarks) for e in examples]))
    same = (ours.detach() * aligned).sum(-1)
    assert same.mean() > 0.85 and same.min() > 0.75, same
    assert (ours.detach() @ aligned.T)[~torch.eye(8, dtype=torch.bool)].abs().mean() < 0.2
    ours.sum().backward()
    assert pixels.grad.abs().sum() > 0 and not any(p.requires_grad for p in encoder.parameters())
