"""The method's controls have one vocabulary: every entry point accepts the same spellings, refuses the same values
with the same sentence, and starts from the same defaults."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from infinite_id import controls, ops
from infinite_id.attention_processors import InfiniteIDAttentionState
from infinite_id.errors import UserInputError
from infinite_id.evaluation.methods import METHODS, Method
from infinite_id.evaluation.runner import EvalSettings
from infinite_id.generation import GenerationSettings

BAD = {"adain": "std", "self_attention": "shared"}
PORTRAIT = Path(__file__).resolve().parents[1] / "examples" / "portraits" / "woman_1.png"


def _message(call) -> str:
    with pytest.raises(UserInputError) as info:
        call()
    return str(info.value)


def _cli_error(*args: str) -> str:
    from infinite_id.cli import app

    result = CliRunner().invoke(app, ["generate", "--prompt", "a", "--ref", str(PORTRAIT), *args])
    assert result.exit_code == 2, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # rich's box, unwrapped


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_choice_reads_the_same_from_every_entry_point(name, make_pipe, reference):
    value = BAD[name]
    expected = _message(lambda: controls.check_method(**{name: value}))
    assert value in expected and ", ".join(getattr(controls, f"{name.upper()}_CHOICES")) in expected
    image, embed = reference
    pipe = make_pipe("sd15")
    entry_points = {
        "pipeline": lambda: pipe("a", id_images=image, face_embeds=embed, num_inference_steps=1, **{name: value}),
        "generation settings": lambda: GenerationSettings(prompt="a", **{name: value}).check(),
        "evaluation method": lambda: Method("x", "x", {name: value}),
        "attention state": lambda: InfiniteIDAttentionState(**{name: value}),
    }
    for where, call in entry_points.items():
        assert _message(call) == expected, where
    flag = "--" + name.replace("_", "-")
    assert expected in _cli_error(flag, value)


def test_numbers_and_windows_are_checked_once(make_pipe, reference):
    image, embed = reference
    pipe = make_pipe("sd15")
    for kwargs, setting in (
        ({"num_inference_steps": 0}, {"steps": 0}),
        ({"guidance_scale": 60.0}, {"guidance": 60.0}),
        ({"id_scale": -1.0}, {"id_scale": -1.0}),
    ):
        expected = _message(lambda kwargs=kwargs: controls.check_method(**kwargs))
        assert _message(lambda kwargs=kwargs: pipe("a", id_images=image, face_embeds=embed, **kwargs)) == expected
        assert _message(lambda setting=setting: GenerationSettings(prompt="a", **setting).check()) == expected
    with pytest.raises(UserInputError, match="id_window"):
        Method("x", "x", {"id_window": (0.6, 0.2)})


def test_accepted_spellings_are_normalised_in_one_place():
    assert [controls.check_adain(v) for v in (True, False, "auto", "mean", "off", "full")] == [
        "mean", "off", "auto", "mean", "off", "full",
    ]  # fmt: skip
    assert controls.resolve_adain("auto", ["a man in watercolor painting style"]) == "mean"
    assert controls.resolve_adain("auto", ["a photo of a man"]) == controls.resolve_adain(False, []) == "off"
    assert InfiniteIDAttentionState(adain=False).adain == "off"
    assert InfiniteIDAttentionState(adain=True).adain == "mean"
    settings = GenerationSettings(prompt="a", adain=True)
    settings.check()
    assert settings.adain == "mean"  # what the PNG records
    q = torch.randn(1, 2, 5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ops.mixed_attention(q, q, q, q * 2, q, adain=True),
                               ops.mixed_attention(q, q, q, q * 2, q, adain="mean"))  # fmt: skip
    torch.testing.assert_close(ops.mixed_attention(q, q, q, q * 2, q, adain=False),
                               ops.mixed_attention(q, q, q, q * 2, q, adain="off"))  # fmt: skip
    with pytest.raises(UserInputError, match="resolved against the prompt"):
        InfiniteIDAttentionState(adain="auto")


def test_every_entry_point_starts_from_the_same_defaults():
    from infinite_id.cli.eval import eval_command
    from infinite_id.cli.generate import generate_command
    from infinite_id.pipelines import InfiniteIDPipeline

    call = inspect.signature(InfiniteIDPipeline.__call__).parameters
    assert call["num_inference_steps"].default == controls.DEFAULT_STEPS == 30
    assert call["guidance_scale"].default == controls.DEFAULT_GUIDANCE == 5.0
    assert call["id_scale"].default == controls.DEFAULT_ID_SCALE
    assert call["adain"].default == controls.DEFAULT_ADAIN
    assert call["self_attention"].default == controls.DEFAULT_SELF_ATTENTION
    assert call["mixed_attention_window"].default == call["id_window"].default == controls.DEFAULT_WINDOW
    settings = GenerationSettings(prompt="a")
    assert (settings.steps, settings.guidance, settings.id_scale, settings.adain, settings.self_attention) == (
        controls.DEFAULT_STEPS, controls.DEFAULT_GUIDANCE, controls.DEFAULT_ID_SCALE, controls.DEFAULT_ADAIN,
        controls.DEFAULT_SELF_ATTENTION,
    )  # fmt: skip
    evaluation = EvalSettings(model="m", adapter="a", methods=[], seeds=[])
    assert (evaluation.num_inference_steps, evaluation.guidance_scale) == (controls.DEFAULT_STEPS, 5.0)
    generate = inspect.signature(generate_command).parameters
    evaluate = inspect.signature(eval_command).parameters
    for name, default in (("steps", controls.DEFAULT_STEPS), ("guidance", controls.DEFAULT_GUIDANCE)):
        assert generate[name].default.default == evaluate[name].default.default == default
    assert generate["adain"].default.default == controls.DEFAULT_ADAIN
    assert METHODS["infinite-id"].pipeline_kwargs["adain"] == controls.DEFAULT_ADAIN


def test_the_face_backend_choices_are_the_face_package_list():
    from infinite_id.faces import BACKENDS

    assert controls.face_backend_choices() == ("auto", *(b for b in BACKENDS if b != "precomputed"))
    assert f"choose {', '.join(controls.face_backend_choices())}" in _cli_error("--face-backend", "nope")
