"""The two-stream pipeline on tiny SD 1.5 and SDXL models loaded through the real loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

from infinite_id.pipelines import (
    InfiniteIDPipeline,
    InfiniteIDStableDiffusionPipeline,
    InfiniteIDStableDiffusionXLPipeline,
)

FAMILIES = ["sd15", "sdxl"]
PROMPT = "a photo of a man wearing a yellow sweater, on the beach"


def _run(pipe, reference, seed=0, **kwargs):
    image, embed = reference
    kwargs.setdefault("num_inference_steps", 3)
    kwargs.setdefault("output_type", "np")
    return pipe(
        kwargs.pop("prompt", PROMPT),
        id_images=image,
        face_embeds=embed,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def _plain(tiny_model_dirs, family, scheduler=None, seed=0, **kwargs):
    plain = DiffusionPipeline.from_pretrained(tiny_model_dirs[family])
    plain.set_progress_bar_config(disable=True)
    if scheduler is not None:
        plain.scheduler = scheduler.from_config(plain.scheduler.config)
    kwargs.setdefault("num_inference_steps", 3)
    kwargs.setdefault("guidance_scale", 5.0)  # our default (the paper's); diffusers' is 7.5
    return plain(PROMPT, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


def test_from_pretrained_dispatches_on_the_base_model(tiny_model_dirs):
    assert isinstance(InfiniteIDPipeline.from_pretrained(tiny_model_dirs["sd15"]), InfiniteIDStableDiffusionPipeline)
    assert isinstance(InfiniteIDPipeline.from_pretrained(tiny_model_dirs["sdxl"]), InfiniteIDStableDiffusionXLPipeline)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InfiniteIDPipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        InfiniteIDPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_id_scale_zero_without_mixed_attention_is_the_plain_pipeline(family, make_pipe, reference, tiny_model_dirs):
    pipe = make_pipe(family)
    out = _run(pipe, reference, id_scale=0.0, self_attention="independent", return_text_stream=True)
    np.testing.assert_allclose(out.images, out.text_images, atol=1e-4)
    np.testing.assert_allclose(out.text_images, _plain(tiny_model_dirs, family), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_stream_is_the_plain_pipeline_in_the_full_method(family, make_pipe, reference, tiny_model_dirs):
    pipe = make_pipe(family)
    out = _run(pipe, reference, return_text_stream=True, adain=True)
    np.testing.assert_allclose(out.text_images, _plain(tiny_model_dirs, family), atol=1e-4)
    assert np.abs(out.images - out.text_images).max() > 1e-3  # the identity changes the identity stream


@pytest.mark.parametrize(
    "scheduler", [EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler], ids=["ancestral", "multistep"]
)
def test_stochastic_and_multistep_schedulers_keep_streams_in_lock_step(
    scheduler, make_pipe, reference, tiny_model_dirs
):
    pipe = make_pipe("sd15")
    pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    out = _run(pipe, reference, id_scale=0.0, return_text_stream=True)
    # With no ID injected the two streams see the same inputs, so even mixed attention leaves them equal,
    # and both equal the plain pipeline: the per-step random draws are shared, not consumed twice.
    np.testing.assert_allclose(out.images, out.text_images, atol=1e-4)
    np.testing.assert_allclose(out.text_images, _plain(tiny_model_dirs, "sd15", scheduler), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_one_batched_unet_call_per_step(family, guidance, make_pipe, reference):
    pipe = make_pipe(family)
    calls = []
    forward = pipe.unet.forward

    def counting(sample, *args, **kwargs):
        calls.append(sample.shape[0])
        return forward(sample, *args, **kwargs)

    pipe.unet.forward = counting
    _run(pipe, reference, num_inference_steps=4, guidance_scale=guidance, num_images_per_prompt=2)
    rows = 2 * 2 * (2 if guidance > 1 else 1)  # images x streams x guidance halves
    assert calls == [rows] * 4
    calls.clear()
    _run(pipe, reference, num_inference_steps=2, self_attention="independent")  # identity stream only
    assert calls == [2] * 2


def test_batch_layout_is_text_uncond_text_cond_id_uncond_id_cond(make_pipe, reference):
    pipe = make_pipe("sd15")
    seen = {}
    forward = pipe.unet.forward

    def spy(sample, t, encoder_hidden_states=None, cross_attention_kwargs=None, **kwargs):
        seen["embeds"] = encoder_hidden_states
        seen["state"] = cross_attention_kwargs["infinite_id"]
        return forward(
            sample,
            t,
            encoder_hidden_states=encoder_hidden_states,
            cross_attention_kwargs=cross_attention_kwargs,
            **kwargs,
        )

    pipe.unet.forward = spy
    _run(pipe, reference, num_inference_steps=1, negative_prompt="blurry")
    e, state = seen["embeds"], seen["state"]
    assert e.shape[0] == 4 and state.text_rows == 2
    torch.testing.assert_close(e[0], e[2])  # uncond rows: negative prompt in both streams
    torch.testing.assert_close(e[1], e[3])
    assert not torch.allclose(e[0], e[1])
    cond, uncond = pipe.encode_identity(reference[0], reference[1])
    torch.testing.assert_close(state.id_tokens, torch.cat([uncond, cond]))


def test_seeds_reproduce_and_differ(make_pipe, reference):
    pipe = make_pipe("sd15")
    a, b, c = (_run(pipe, reference, seed=s).images for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_id_scale_and_windows_control_injection(make_pipe, reference):
    pipe = make_pipe("sd15")
    off = _run(pipe, reference, id_scale=0.0, self_attention="independent").images
    window_off = _run(pipe, reference, id_window=(0.0, 0.0), self_attention="independent").images
    late = _run(pipe, reference, id_window=(0.5, 1.0), self_attention="independent").images
    full = _run(pipe, reference, self_attention="independent").images
    np.testing.assert_allclose(window_off, off, atol=1e-6)
    assert np.abs(full - off).max() > 1e-3
    assert np.abs(late - off).max() > 1e-6 and np.abs(late - full).max() > 1e-6
    mixed_never = _run(pipe, reference, mixed_attention_window=(0.0, 0.0)).images
    np.testing.assert_allclose(mixed_never, full, atol=1e-5)
    with pytest.raises(ValueError, match="id_window"):
        _run(pipe, reference, id_window=(0.6, 0.2))


def test_attention_modes_and_adain_differ(make_pipe, reference):
    pipe = make_pipe("sd15")
    style = "a man in watercolor painting style"
    outs = {
        (mode, adain): _run(pipe, reference, prompt=style, self_attention=mode, adain=adain).images
        for mode, adain in [
            ("mixed", False),
            ("mixed", "mean"),
            ("mixed", "full"),
            ("mutual", False),
            ("independent", False),
        ]
    }
    keys = list(outs)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert np.abs(outs[a] - outs[b]).max() > 1e-5, (a, b)
    auto = _run(pipe, reference, prompt=style, adain="auto").images
    np.testing.assert_array_equal(auto, outs[("mixed", "mean")])  # the prompt names a style
    auto_photo = _run(pipe, reference, adain="auto").images
    np.testing.assert_array_equal(auto_photo, _run(pipe, reference, adain=False).images)


def test_block_selection_matters(make_pipe, reference):
    pipe = make_pipe("sd15")
    full = _run(pipe, reference).images
    pipe.set_blocks(mixed_attention_blocks=[], id_blocks=[])
    none = _run(pipe, reference).images
    pipe.set_blocks()
    np.testing.assert_array_equal(_run(pipe, reference).images, full)
    # no mixed attention and no ID anywhere: the identity stream is the text stream
    out = _run(pipe, reference, return_text_stream=True)
    pipe.set_blocks(mixed_attention_blocks=[], id_blocks=[])
    np.testing.assert_allclose(none, out.text_images, atol=1e-5)


def test_multiple_references_and_interpolation(make_pipe, reference):
    from infinite_id.identity import interpolate_identities

    pipe = make_pipe("sd15")
    image, embed = reference
    n = pipe.image_proj.config.num_id_tokens
    cond1, _ = pipe.encode_identity(image, embed)
    cond2, uncond2 = pipe.encode_identity([image, image.transpose(0)], np.stack([embed, -embed]))
    mean2, _ = pipe.encode_identity([image, image], np.stack([embed, embed]), multi_image="mean")
    assert cond1.shape[1] == n and cond2.shape[1] == 2 * n and uncond2.shape == cond2.shape
    torch.testing.assert_close(mean2, cond1)
    other, _ = pipe.encode_identity(image.transpose(0), -embed)
    torch.testing.assert_close(interpolate_identities(cond1, other, 1.0), cond1)
    mid = interpolate_identities(cond1, other, 0.5)
    torch.testing.assert_close(mid, (cond1 + other) / 2)
    _, uncond = pipe.encode_identity(image, embed)
    out = pipe(
        PROMPT,
        id_tokens=(mid, uncond),
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images.shape == (1, 64, 64, 3)


def test_callback_on_step_end_sees_and_can_change_latents(make_pipe, reference):
    pipe = make_pipe("sdxl")
    steps = []

    def callback(p, i, t, kwargs):
        steps.append((i, kwargs["latents"].shape, kwargs["text_latents"].shape))
        return {"latents": kwargs["latents"] * 0}

    out = _run(
        pipe,
        reference,
        num_inference_steps=3,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "text_latents"],
        output_type="latent",
    )
    assert [s[0] for s in steps] == [0, 1, 2]
    assert torch.count_nonzero(out.images) == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(dtype, make_pipe, reference):
    pipe = make_pipe("sdxl")
    pipe.to(dtype=dtype)
    assert pipe.image_proj.face_mapper.norm.weight.dtype == dtype
    out = _run(pipe, reference, num_inference_steps=2, return_text_stream=True, adain=True)
    assert np.isfinite(out.images).all() and out.images.shape == (1, 64, 64, 3)


def test_bad_arguments_are_clear(make_pipe, reference):
    pipe = make_pipe("sd15")
    with pytest.raises(ValueError, match="self_attention"):
        _run(pipe, reference, self_attention="shared")
    with pytest.raises(ValueError, match="adain"):
        _run(pipe, reference, adain="std")
    with pytest.raises(ValueError, match="reference photo"):
        pipe(PROMPT, num_inference_steps=1)
    with pytest.raises(ValueError, match="face analyzer"):
        pipe(PROMPT, id_images=reference[0], num_inference_steps=1)
    with pytest.raises(ValueError, match="multiples"):
        _run(pipe, reference, height=63)
    bare = make_pipe("sd15", adapter=False)
    with pytest.raises(RuntimeError, match="adapter"):
        _run(bare, reference)


def test_diffusers_load_ip_adapter_is_refused_with_the_right_loader(make_pipe):
    pipe = make_pipe("sd15")
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(TypeError, match=r"infinite_id\.loaders\.load_ip_adapter"):
        pipe.load_ip_adapter("h94/IP-Adapter", subfolder="models", weight_name="ip-adapter_sd15.bin")
    assert dict(pipe.unet.attn_processors) == before


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_writes_the_base_model_without_the_adapter(family, make_pipe, tmp_path, tiny_model_dirs):
    from safetensors import safe_open

    pipe = make_pipe(family)
    pipe.save_pretrained(tmp_path / "saved")
    (weights,) = (tmp_path / "saved" / "unet").glob("*.safetensors")
    with safe_open(str(weights), framework="pt") as f:
        saved = set(f.keys())
    (original,) = (tiny_model_dirs[family] / "unet").glob("*.safetensors")
    with safe_open(str(original), framework="pt") as f:
        assert saved == set(f.keys())
    assert any(".processor." in k for k in pipe.unet.state_dict())  # training still sees its trainable weights
    reloaded = InfiniteIDPipeline.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(
        reloaded.unet.state_dict(), DiffusionPipeline.from_pretrained(tiny_model_dirs[family]).unet.state_dict()
    )


@pytest.mark.parametrize(("family", "upcast"), [("sd15", False), ("sdxl", True)])
def test_float16_vae_is_upcast_only_where_diffusers_does(family, upcast, make_pipe, reference):
    pipe = make_pipe(family)
    pipe.to(dtype=torch.float16)
    assert pipe.vae.config.force_upcast
    seen = []
    decode = pipe.vae.decode

    def spy(latents, *args, **kwargs):
        seen.append(pipe.vae.post_quant_conv.weight.dtype)
        return decode(latents, *args, **kwargs)

    pipe.vae.decode = spy
    out = _run(pipe, reference, num_inference_steps=2)
    assert seen == [torch.float32 if upcast else torch.float16]
    assert pipe.vae.dtype == torch.float16 and np.isfinite(out.images).all()


def test_safety_flags_are_per_stream(make_pipe, reference):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    pipe = make_pipe("sd15")
    vision = pipe.image_encoder.config
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4},
        vision_config=vision.to_dict(),
        projection_dim=vision.projection_dim,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    pipe.register_modules(safety_checker=checker)
    out = _run(pipe, reference, num_images_per_prompt=2, return_text_stream=True)
    assert len(out.nsfw_content_detected) == 2 and len(out.text_nsfw_content_detected) == 2
    latents = _run(pipe, reference, num_images_per_prompt=2, return_text_stream=True, output_type="latent")
    for stream, flags in (
        (latents.images, out.nsfw_content_detected),
        (latents.text_images, out.text_nsfw_content_detected),
    ):
        with torch.no_grad():
            decoded = pipe._decode(stream)
            _, alone = pipe.run_safety_checker(decoded, "cpu", decoded.dtype)
        assert list(alone) == list(flags)
