import pytest

from infinite_id.style_prompts import names_style


@pytest.mark.parametrize(
    "prompt",
    [
        "a man in comic book style",
        "a woman in Disney cartoon style",
        "a man in oil painting style",
        "a woman in Ukiyo-e Painting style",
        "anime portrait of a man",
        "a watercolour of a woman",
    ],
)
def test_style_prompts(prompt):
    assert names_style(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of a woman wearing a brown clothing, in the snow",
        "a photo of a man is running, facing and smiling to the camera",
        "a photo of a man wearing a shirt, in the forest",
    ],
)
def test_raw_photo_prompts(prompt):
    assert not names_style(prompt)
