"""Every scheduler diffusers ships: both streams stay plain diffusers where they should, and the step windows
follow the scheduler's progress (Heun/KDPM2 make two UNet calls per step, PNDM one extra), not the call count."""

from __future__ import annotations

import inspect

import diffusers
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, SchedulerMixin

from infinite_id.sampling import call_progress, classifier_free_guidance, window_active

PROMPT = "a photo of a man wearing a yellow sweater, on the beach"
STEPS = 4


def _scheduler_classes() -> list[str]:
    """Every scheduler class diffusers exports (the ones needing an optional package are dummies, left out)."""
    names = []
    for name in dir(diffusers):
        cls = getattr(diffusers, name, None)
        if inspect.isclass(cls) and issubclass(cls, SchedulerMixin) and cls is not SchedulerMixin:
            names.append(name)
    return sorted(names)


SCHEDULERS = _scheduler_classes()


@pytest.fixture(scope="module")
def plain_sd15(tiny_model_dirs):
    pipe = DiffusionPipeline.from_pretrained(tiny_model_dirs["sd15"])
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.scheduler.config


def _plain_images(plain_and_config, name: str, **kwargs) -> np.ndarray:
    """diffusers' own pipeline on scheduler ``name``; skips the schedulers diffusers' pipeline itself cannot run
    (flow matching, VQ, inpainting-only, ...): those are not Stable Diffusion samplers."""
    plain, base_config = plain_and_config
    try:
        plain.scheduler = getattr(diffusers, name).from_config(base_config)
        kwargs.setdefault("num_inference_steps", STEPS)
        return plain(PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images
    except Exception as exc:  # noqa: BLE001 - any failure of diffusers' own pipeline means "not an SD sampler"
        pytest.skip(f"diffusers' StableDiffusionPipeline cannot run {name}: {type(exc).__name__}: {exc}"[:200])


def _ours(pipe, name: str, reference, scheduler_config: dict | None = None, **kwargs):
    pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config, **(scheduler_config or {}))
    image, embed = reference
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "np")
    return pipe(PROMPT, id_images=image, face_embeds=embed, generator=torch.Generator().manual_seed(0), **kwargs)


def test_the_scheduler_list_is_diffusers_own():
    assert {"DDIMScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler", "PNDMScheduler"} <= set(SCHEDULERS)
    assert len(SCHEDULERS) >= 20


@pytest.mark.parametrize("name", SCHEDULERS)
def test_streams_equal_plain_diffusers_on_every_scheduler(name, plain_sd15, make_pipe, reference):
    plain = _plain_images(plain_sd15, name, guidance_scale=5.0)
    pipe = make_pipe("sd15")
    # Identity stream alone ("w/o mixed attention" / "identity only" ablations) with no identity: plain diffusers.
    alone = _ours(pipe, name, reference, id_scale=0.0, self_attention="independent")
    np.testing.assert_allclose(alone.images, plain, atol=1e-4)
    # The full method: its text stream is plain diffusers, the identity changes the identity stream.
    full = _ours(pipe, name, reference, return_text_stream=True, adain=True)
    np.testing.assert_allclose(full.text_images, plain, atol=1e-4)
    assert np.isfinite(full.images).all()


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler"])
def test_sdxl_identity_stream_alone_equals_plain_on_sigma_schedulers(name, make_pipe, reference, tiny_model_dirs):
    plain = DiffusionPipeline.from_pretrained(tiny_model_dirs["sdxl"])
    plain.set_progress_bar_config(disable=True)
    expected = _plain_images((plain, plain.scheduler.config), name, guidance_scale=5.0)
    out = _ours(make_pipe("sdxl"), name, reference, id_scale=0.0, self_attention="independent")
    np.testing.assert_allclose(out.images, expected, atol=1e-4)


def _record_windows(pipe, name, reference, **kwargs) -> tuple[list[float], list[bool], list[bool]]:
    """(timestep, identity injected, mixed attention) of every UNet call of one run."""
    calls = []
    forward = pipe.unet.forward

    def spy(sample, t, *args, cross_attention_kwargs=None, **kw):
        state = cross_attention_kwargs["infinite_id"]
        calls.append((float(t), state.id_scale > 0, state.self_attention == "mixed"))
        return forward(sample, t, *args, cross_attention_kwargs=cross_attention_kwargs, **kw)

    pipe.unet.forward = spy
    kwargs.setdefault("num_inference_steps", 30)
    _ours(pipe, name, reference, output_type="latent", **kwargs)
    pipe.unet.forward = forward
    return [c[0] for c in calls], [c[1] for c in calls], [c[2] for c in calls]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_windows_follow_the_scheduler_progress(name, plain_sd15, make_pipe, reference):
    _plain_images(plain_sd15, name)  # skips what diffusers itself cannot run
    pipe = make_pipe("sd15")
    steps = 6
    times, ids, mixed = _record_windows(pipe, name, reference, num_inference_steps=steps)
    assert all(ids) and all(mixed), "the full windows must cover every UNet call, however many a step makes"

    times, ids, mixed = _record_windows(
        pipe, name, reference, num_inference_steps=steps, id_window=(0.0, 0.5), mixed_attention_window=(0.5, 1.0)
    )
    first_off = ids.index(False)
    assert ids[0] and all(ids[:first_off]) and not any(ids[first_off:]), "the first half: a prefix of the calls"
    assert mixed == [not x for x in ids], "complementary windows split the calls between them"
    assert 0.3 <= first_off / len(ids) <= 0.7, (first_off, len(ids))
    # a noise level is either inside or outside the window, whichever call of a step evaluates it
    assert not {t for t, on in zip(times, ids, strict=True) if on} & {
        t for t, on in zip(times, ids, strict=True) if not on
    }
    if len(set(times)) == len(times) == steps:  # one call per step: the window is exactly the first half of the steps
        assert first_off == steps // 2


def test_sd15_default_pndm_keeps_the_identity_to_the_last_call(make_pipe, reference):
    # SD 1.5's published scheduler: PNDM with skip_prk_steps, 31 UNet calls for 30 steps
    pipe = make_pipe("sd15")
    config = {"skip_prk_steps": True}
    times, ids, mixed = _record_windows(pipe, "PNDMScheduler", reference, scheduler_config=config)
    assert len(times) == 31 and all(ids) and all(mixed)
    times, ids, _ = _record_windows(
        pipe, "PNDMScheduler", reference, scheduler_config=config, id_window=(0.5, 1.0), num_inference_steps=30
    )
    assert ids == [False] * 16 + [True] * 15  # the repeated second timestep is the same noise level as the first


def test_call_progress_counts_noise_levels_not_calls():
    assert call_progress(torch.tensor([900, 600, 300])) == [0.0, 1 / 3, 2 / 3]
    heun = call_progress(torch.tensor([900.0, 600.0, 600.0, 300.0, 300.0]))  # Heun: repeated timesteps
    assert heun == [0.0, 1 / 3, 1 / 3, 2 / 3, 2 / 3]
    assert [window_active((0.0, 0.5), p) for p in heun] == [True, True, True, False, False]
    assert call_progress([1.0, 5.0, 9.0]) == [0.0, 1 / 3, 2 / 3]  # inverse schedulers run upwards


def test_guidance_rescale_matches_the_conditional_spread():
    torch.manual_seed(0)
    uncond, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8) * 3
    plain = classifier_free_guidance(uncond, cond, 7.5)
    torch.testing.assert_close(plain, uncond + 7.5 * (cond - uncond))
    full = classifier_free_guidance(uncond, cond, 7.5, rescale=1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)))
    half = classifier_free_guidance(uncond, cond, 7.5, rescale=0.5)
    torch.testing.assert_close(half, (plain + full) / 2)
