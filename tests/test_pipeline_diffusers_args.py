"""The diffusers call signature: every argument of diffusers' own SD 1.5 and SDXL pipelines is accepted and means
the same (the text stream equals diffusers with it), the properties diffusers' callbacks read exist, and the
loaders diffusers users know (``from_pipe``, ``from_single_file``) dispatch like ``from_pretrained``."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.callbacks import SDCFGCutoffCallback, SDXLCFGCutoffCallback
from safetensors.torch import save_file

from infinite_id.pipelines import (
    InfiniteIDPipeline,
    InfiniteIDStableDiffusionPipeline,
    InfiniteIDStableDiffusionXLPipeline,
)

PROMPT = "a photo of a man wearing a yellow sweater, on the beach"

#: diffusers arguments that have no meaning here, and why. Anything else diffusers adds must be accepted.
NOT_APPLICABLE = {
    "self": "the instance",
    "kwargs": "diffusers' deprecated callback/callback_steps; use callback_on_step_end",
    "ip_adapter_image": "the identity is given by id_images / face_embeds / id_features / id_tokens",
    "ip_adapter_image_embeds": "the identity is given by id_images / face_embeds / id_features / id_tokens",
}
PAIRS = [
    (InfiniteIDStableDiffusionPipeline, StableDiffusionPipeline),
    (InfiniteIDStableDiffusionXLPipeline, StableDiffusionXLPipeline),
]
FAMILY = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=["sd15", "sdxl"])
def test_every_diffusers_call_argument_is_accepted(ours, theirs):
    theirs_args = set(inspect.signature(theirs.__call__).parameters) - set(NOT_APPLICABLE)
    ours_args = set(inspect.signature(ours.__call__).parameters)
    assert theirs_args - ours_args == set(), "diffusers arguments the Infinite-ID pipeline does not take"
    assert set(theirs._callback_tensor_inputs) <= set(ours._callback_tensor_inputs)
    properties = {n for n, v in inspect.getmembers(theirs) if isinstance(v, property)}
    assert properties <= {n for n, v in inspect.getmembers(ours) if isinstance(v, property)}


@pytest.fixture(scope="module")
def plain_pipes(tiny_model_dirs):
    pipes = {family: DiffusionPipeline.from_pretrained(tiny_model_dirs[family]) for family in ("sd15", "sdxl")}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def _both(plain, pipe, reference, **kwargs):
    """(diffusers' images, our identity images, our text-stream images) for the same arguments and seed."""
    kwargs.setdefault("num_inference_steps", 3)
    kwargs.setdefault("guidance_scale", 5.0)
    prompt = {} if "prompt_embeds" in kwargs else {"prompt": PROMPT}
    expected = plain(**prompt, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images
    out = pipe(
        **prompt,
        id_images=reference[0],
        face_embeds=reference[1],
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        return_text_stream=True,
        **kwargs,
    )
    return expected, out.images, out.text_images


CASES = {
    "sd15": {
        "guidance_rescale": {"guidance_rescale": 0.7},
        "negative_prompt": {"negative_prompt": "blurry"},
    },
    "sdxl": {
        "clip_skip": {"clip_skip": 1},
        "guidance_rescale": {"guidance_rescale": 0.7},
        "denoising_end": {"denoising_end": 0.6, "num_inference_steps": 5},
        "prompt_2": {"prompt_2": "a red hat", "negative_prompt_2": "blurry"},
        "size_conditioning": {
            "original_size": (128, 96),
            "target_size": (64, 64),
            "crops_coords_top_left": (8, 4),
            "negative_original_size": (32, 32),
            "negative_target_size": (64, 64),
            "negative_crops_coords_top_left": (0, 0),
        },
    },
}


@pytest.mark.parametrize(
    ("family", "case"), [(f, c) for f, cases in CASES.items() for c in cases], ids=lambda x: str(x)
)
def test_diffusers_arguments_mean_the_same(family, case, plain_pipes, make_pipe, reference):
    pipe = make_pipe(family)
    kwargs = CASES[family][case]
    expected, images, text_images = _both(plain_pipes[family], pipe, reference, **kwargs)
    np.testing.assert_allclose(text_images, expected, atol=1e-4)
    # and the argument reached the run: without it diffusers gives another picture
    baseline = _both(plain_pipes[family], pipe, reference, num_inference_steps=kwargs.get("num_inference_steps", 3))
    assert np.abs(baseline[0] - expected).max() > 1e-4, f"{case} changed nothing; the test would prove nothing"


def test_sd15_clip_skip_is_the_earlier_layer_through_the_final_norm(plain_pipes, make_pipe, reference):
    # diffusers' own SD 1.5 clip_skip fails on transformers 5 (it reads text_encoder.text_model); the reference
    # here is its documented meaning, fed to diffusers as prompt_embeds.
    pipe = make_pipe("sd15")
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    skipped = pipe.text_encoder.final_layer_norm(hidden).detach()
    expected = plain_pipes["sd15"](
        prompt_embeds=skipped,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    out = pipe(
        PROMPT,
        id_images=reference[0],
        face_embeds=reference[1],
        clip_skip=1,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        return_text_stream=True,
    )
    np.testing.assert_allclose(out.text_images, expected, atol=1e-4)
    plain_out = _both(plain_pipes["sd15"], pipe, reference)[0]
    assert np.abs(plain_out - expected).max() > 1e-4


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_prompt_embeds_replace_the_prompt(family, plain_pipes, make_pipe, reference):
    pipe = make_pipe(family)
    encoded = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
    if family == "sd15":
        kwargs = {"prompt_embeds": encoded[0], "negative_prompt_embeds": encoded[1]}
    else:
        kwargs = dict(
            zip(
                ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"],
                encoded,
                strict=True,
            )
        )
    expected, images, text_images = _both(plain_pipes[family], pipe, reference, **kwargs)
    np.testing.assert_allclose(text_images, expected, atol=1e-4)
    from_text = _both(plain_pipes[family], pipe, reference)
    np.testing.assert_allclose(images, from_text[1], atol=1e-5)  # the identity stream too
    np.testing.assert_allclose(expected, from_text[0], atol=1e-5)


@pytest.mark.parametrize(
    ("family", "callback"),
    [("sd15", SDCFGCutoffCallback), ("sdxl", SDXLCFGCutoffCallback)],
    ids=["sd15", "sdxl"],
)
def test_diffusers_cfg_cutoff_callback(family, callback, plain_pipes, make_pipe, reference):
    pipe = make_pipe(family)
    kwargs = {"callback_on_step_end": callback(cutoff_step_ratio=0.5), "num_inference_steps": 4}
    expected, images, text_images = _both(plain_pipes[family], pipe, reference, **kwargs)
    np.testing.assert_allclose(text_images, expected, atol=1e-4)
    assert pipe.guidance_scale == 0.0 and not pipe.do_classifier_free_guidance  # the callback switched it off
    assert np.isfinite(images).all()


def test_properties_are_readable_in_a_callback(make_pipe, reference):
    pipe = make_pipe("sdxl")
    seen = []

    def callback(p, i, t, tensors):
        seen.append(
            (p.guidance_scale, p.guidance_rescale, p.clip_skip, p.do_classifier_free_guidance, p.num_timesteps)
            + (p.denoising_end, p.interrupt, p.cross_attention_kwargs)
        )
        assert tensors["prompt_embeds"].shape[0] == 2 and tensors["add_time_ids"].shape[0] == 2
        return {}

    pipe(
        PROMPT,
        id_images=reference[0],
        face_embeds=reference[1],
        num_inference_steps=3,
        guidance_scale=6.0,
        guidance_rescale=0.3,
        clip_skip=1,
        denoising_end=0.9,
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["prompt_embeds", "add_time_ids"],
    )
    assert seen == [(6.0, 0.3, 1, True, 2, 0.9, False, None)] * 2  # denoising_end=0.9 drops the last step


def test_sdxl_only_arguments_are_refused_on_sd15(make_pipe, reference):
    pipe = make_pipe("sd15")
    for kwargs in ({"prompt_2": "x"}, {"original_size": (64, 64)}, {"pooled_prompt_embeds": torch.zeros(1, 32)}):
        with pytest.raises(ValueError, match="SDXL-only"):
            pipe(PROMPT, id_images=reference[0], face_embeds=reference[1], num_inference_steps=1, **kwargs)
    with pytest.raises(ValueError, match="prompt or prompt_embeds"):
        pipe(id_images=reference[0], face_embeds=reference[1], num_inference_steps=1)
    sdxl = make_pipe("sdxl")
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        sdxl(prompt_embeds=torch.zeros(1, 77, 64), id_images=reference[0], face_embeds=reference[1])


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_from_pipe_dispatches_and_shares_components(family, plain_pipes):
    plain = plain_pipes[family]
    pipe = InfiniteIDPipeline.from_pipe(plain)
    expected = InfiniteIDStableDiffusionXLPipeline if family == "sdxl" else InfiniteIDStableDiffusionPipeline
    assert type(pipe) is expected
    assert pipe.unet is plain.unet and pipe.text_encoder is plain.text_encoder
    assert isinstance(expected.from_pipe(plain), expected)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,)}, "sdxl"),
        ({"model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1)}, "sd15"),
        ({"model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}, "sd15"),
        ({"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,)}, None),  # refiner
    ],
    ids=["sdxl", "v1", "v2", "refiner"],
)
def test_from_single_file_picks_the_family_from_the_checkpoint(keys, expected, tmp_path, tiny_model_dirs):
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    if expected is None:
        with pytest.raises(ValueError, match="xl_refiner"):
            InfiniteIDPipeline.pipeline_class_for_single_file(path)
        return
    target = InfiniteIDPipeline.pipeline_class_for_single_file(path)
    assert issubclass(target, FAMILY[expected]) and issubclass(target, InfiniteIDPipeline)
    # with config=, the diffusers folder decides
    assert InfiniteIDPipeline.pipeline_class_for_single_file(path, config=tiny_model_dirs["sdxl"]) is (
        InfiniteIDStableDiffusionXLPipeline
    )


def test_custom_sigmas_mean_the_same(plain_pipes, make_pipe, reference):
    from diffusers import EulerDiscreteScheduler

    pipe = make_pipe("sd15")
    plain = plain_pipes["sd15"]
    original = plain.scheduler
    plain.scheduler = EulerDiscreteScheduler.from_config(original.config)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    try:
        expected, images, text_images = _both(plain, pipe, reference, sigmas=[10.0, 3.0, 0.8])
        default = _both(plain, pipe, reference)[0]
    finally:
        plain.scheduler = original
    np.testing.assert_allclose(text_images, expected, atol=1e-4)
    assert np.abs(default - expected).max() > 1e-4


def test_lora_weights_load_through_peft_into_both_streams(tmp_path, tiny_model_dirs, make_pipe, reference):
    pytest.importorskip("peft", reason="the [lora] extra")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    source = DiffusionPipeline.from_pretrained(tiny_model_dirs["sd15"])
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    source.unet.add_adapter(config)
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(source.unet))

    plain = DiffusionPipeline.from_pretrained(tiny_model_dirs["sd15"])
    plain.set_progress_bar_config(disable=True)
    pipe = make_pipe("sd15")
    before = _both(plain, pipe, reference)
    plain.load_lora_weights(tmp_path)
    pipe.load_lora_weights(tmp_path)
    expected, images, text_images = _both(plain, pipe, reference)
    np.testing.assert_allclose(text_images, expected, atol=1e-4)
    assert np.abs(before[2] - text_images).max() > 1e-3 and np.abs(before[1] - images).max() > 1e-3
