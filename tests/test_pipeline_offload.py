"""diffusers' CPU offload modes, run on the CPU with their real hooks (``device="cpu"``): the images are the same
as without offload, and the models are freed when they should be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.hooks import CpuOffload, SequentialHook

PROMPT = "a photo of a man wearing a yellow sweater, on the beach"


def _run(pipe, reference, **kwargs):
    return pipe(
        PROMPT,
        id_images=reference[0],
        face_embeds=reference[1],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        return_text_stream=True,
        **kwargs,
    )


def _offload_hook(module) -> CpuOffload:
    hook = module._hf_hook
    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return next(h for h in hooks if isinstance(h, CpuOffload))


def _track_residency(pipe) -> list[tuple[str, frozenset[str]]]:
    """Which models model offload would hold on the accelerator as each one starts, as accelerate's chain decides
    it: a model is loaded when it runs and unloaded when the next model of ``model_cpu_offload_seq`` runs. (On the
    CPU the hooks skip the moves, the chain's decisions are the same.)"""
    names = {id(m): n for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    resident: set[str] = set()
    starts: list[tuple[str, frozenset[str]]] = []
    for module in (m for m in pipe.components.values() if isinstance(m, torch.nn.Module)):
        hook = _offload_hook(module)
        original = hook.pre_forward

        def pre_forward(mod, *args, _original=original, _hook=hook, **kwargs):
            if _hook.prev_module_hook is not None:
                resident.discard(names[id(_hook.prev_module_hook.model)])
            resident.add(names[id(mod)])
            starts.append((names[id(mod)], frozenset(resident)))
            return _original(mod, *args, **kwargs)

        hook.pre_forward = pre_forward
    return starts


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_model_cpu_offload_same_images_and_one_model_at_a_time(family, make_pipe, reference):
    pipe = make_pipe(family)
    expected = _run(pipe, reference)
    pipe.enable_model_cpu_offload(device="cpu")
    starts = _track_residency(pipe)
    out = _run(pipe, reference)
    np.testing.assert_allclose(out.images, expected.images, atol=1e-5)
    np.testing.assert_allclose(out.text_images, expected.text_images, atol=1e-5)
    first = {}
    for name, resident in starts:
        first.setdefault(name, resident)
    assert "image_encoder" in first and "unet" in first and "vae" in first
    assert first["unet"] == {"unet"}, f"models left on the accelerator while denoising: {first['unet'] - {'unet'}}"
    assert first["vae"] == {"vae"}
    order = list(first)
    chain = [n for n in pipe.model_cpu_offload_seq.split("->") if n in first]
    assert order == chain, "the models must run in the offload chain's order, or the chain cannot free them"


def _sequential_offload(pipe) -> None:
    pipe.enable_sequential_cpu_offload(device="cpu")
    # diffusers names the device "cpu:0"; accelerate's tied-weight map then misses "cpu" and hands a bare tensor to
    # nn.Embedding (a CPU-only accelerate quirk: on a GPU the names agree). Name it as accelerate does.
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for module in component.modules():
                if getattr(getattr(module, "_hf_hook", None), "execution_device", None) is not None:
                    module._hf_hook.execution_device = torch.device("cpu")


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_sequential_cpu_offload_same_images_and_weights_stay_offloaded(family, make_pipe, reference):
    pipe = make_pipe(family)
    expected = _run(pipe, reference)
    _sequential_offload(pipe)
    out = _run(pipe, reference)
    np.testing.assert_allclose(out.images, expected.images, atol=1e-5)
    np.testing.assert_allclose(out.text_images, expected.text_images, atol=1e-5)
    for name in ("unet", "text_encoder", "image_encoder", "vae"):
        devices = {p.device.type for p in getattr(pipe, name).parameters()}
        assert devices == {"meta"}, f"{name} kept weights on {devices - {'meta'}} after the call"


def test_adapter_must_come_before_sequential_offload(make_pipe, tmp_path):
    pipe = make_pipe("sd15")
    path = pipe.save_adapter(tmp_path / "adapter.safetensors")
    pipe.unload_adapter()
    _sequential_offload(pipe)
    with pytest.raises(RuntimeError, match="load the adapter first"):
        pipe.load_adapter(path)


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CI and the CPU suite skip it)"
)


@needs_cuda
def test_on_a_gpu_model_offload_holds_only_the_unet_while_denoising(make_pipe, reference):
    pipe = make_pipe("sdxl")
    pipe.enable_model_cpu_offload()
    devices = []
    hooked = pipe.unet.forward

    def spy(*args, **kwargs):
        out = hooked(*args, **kwargs)  # the hook has loaded the UNet and unloaded the model before it
        modules = {n: m for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
        devices.append({n: next(m.parameters()).device.type for n, m in modules.items()})
        return out

    pipe.unet.forward = spy
    torch.cuda.reset_peak_memory_stats()
    out = _run(pipe, reference)
    assert np.isfinite(out.images).all()
    assert devices[0] == {"vae": "cpu", "text_encoder": "cpu", "text_encoder_2": "cpu", "unet": "cuda",
                          "image_encoder": "cpu"}  # fmt: skip
    assert next(pipe.image_proj.parameters()).device.type == "cpu"  # the adapter's mappers are offloaded too
    print(f"model offload: peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")


@needs_cuda
def test_on_a_gpu_sequential_offload_matches_the_resident_pipeline(make_pipe, reference):
    pipe = make_pipe("sdxl")
    pipe.to("cuda")
    expected = _run(pipe, reference)
    pipe.to("cpu")
    pipe.enable_sequential_cpu_offload()
    torch.cuda.reset_peak_memory_stats()
    out = _run(pipe, reference)
    np.testing.assert_allclose(out.images, expected.images, atol=1e-3)
    print(f"sequential offload: peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
