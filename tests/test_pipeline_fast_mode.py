"""The fast mode (``text_stream="window"``): the text stream stops when the mixed-attention window closes.

What is provable: once the window has closed, the identity rows' self-attention is plain self-attention and every
other layer treats batch rows independently, so leaving the text rows out of the batch changes nothing the identity
stream computes. Its result must equal the exact mode's (up to float rounding of a different batch size), while
the UNet runs on half the rows from then on.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, HeunDiscreteScheduler

from infinite_id.errors import UserInputError
from infinite_id.sampling import call_progress, check_text_stream, text_stream_calls

PROMPT = "a photo of a man wearing a yellow sweater, on the beach"


def _run(pipe, reference, rows: list[int] | None = None, **kwargs):
    image, embed = reference
    if rows is not None:
        forward = pipe.unet.forward

        def counting(sample, *args, **kw):
            rows.append(sample.shape[0])
            return forward(sample, *args, **kw)

        pipe.unet.forward = counting
    try:
        return pipe(
            PROMPT,
            id_images=image,
            face_embeds=embed,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            adain=True,
            **kwargs,
        ).images
    finally:
        if rows is not None:
            del pipe.unet.forward


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_window_mode_gives_the_exact_identity_stream_at_half_the_rows(family, make_pipe, reference):
    pipe = make_pipe(family)
    exact_rows: list[int] = []
    fast_rows: list[int] = []
    window = (0.0, 0.5)
    exact = _run(pipe, reference, exact_rows, num_inference_steps=6, mixed_attention_window=window)
    fast = _run(pipe, reference, fast_rows, num_inference_steps=6, mixed_attention_window=window, text_stream="window")
    torch.testing.assert_close(fast, exact, atol=1e-5, rtol=1e-5)
    assert exact_rows == [4] * 6
    assert fast_rows == [4] * 3 + [2] * 3  # text stream dropped after the window's last call
    # the text stream did matter while the window was open: without mixed attention the result differs
    independent = _run(pipe, reference, num_inference_steps=6, self_attention="independent")
    assert (independent - exact).abs().max() > 1e-4


def test_window_mode_is_the_exact_mode_while_the_window_stays_open(make_pipe, reference):
    pipe = make_pipe("sd15")
    rows: list[int] = []
    exact = _run(pipe, reference, num_inference_steps=4)
    fast = _run(pipe, reference, rows, num_inference_steps=4, text_stream="window")
    torch.testing.assert_close(fast, exact, atol=0, rtol=0)  # same calls, same rows: bit for bit
    assert rows == [4] * 4


def test_window_mode_on_stochastic_and_two_call_schedulers(make_pipe, reference):
    pipe = make_pipe("sd15")
    for scheduler in (EulerAncestralDiscreteScheduler, HeunDiscreteScheduler):
        pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
        window = (0.0, 0.34)
        exact = _run(pipe, reference, num_inference_steps=3, mixed_attention_window=window)
        rows: list[int] = []
        fast = _run(pipe, reference, rows, num_inference_steps=3, mixed_attention_window=window, text_stream="window")
        torch.testing.assert_close(fast, exact, atol=1e-5, rtol=1e-5)
        assert rows[-1] == 2 and rows[0] == 4 and sorted(rows, reverse=True) == rows


def test_a_window_that_never_opens_needs_no_text_stream(make_pipe, reference):
    pipe = make_pipe("sd15")
    rows: list[int] = []
    fast = _run(pipe, reference, rows, num_inference_steps=3, mixed_attention_window=(0.5, 0.5), text_stream="window")
    independent = _run(pipe, reference, num_inference_steps=3, self_attention="independent")
    assert rows == [2] * 3
    torch.testing.assert_close(fast, independent, atol=1e-5, rtol=1e-5)


def test_text_stream_calls_counts_the_calls_up_to_the_windows_last_open_one():
    progress = call_progress([999, 800, 600, 400, 200])  # 0, .2, .4, .6, .8
    assert text_stream_calls(progress, (0.0, 0.5), "exact") == 5
    assert text_stream_calls(progress, (0.0, 0.5), "window") == 3
    assert text_stream_calls(progress, (0.0, 1.0), "window") == 5
    assert text_stream_calls(progress, (0.3, 0.3), "window") == 0
    heun = call_progress([999, 500, 500, 1])  # Heun's repeated timestep keeps its rank
    assert text_stream_calls(heun, (0.0, 0.5), "window") == 3


def test_bad_text_stream_arguments_are_one_line_errors(make_pipe, reference):
    with pytest.raises(UserInputError, match="text_stream must be one of exact, window"):
        check_text_stream("fast", False)
    with pytest.raises(UserInputError, match="cannot also be returned"):
        check_text_stream("window", True)
    pipe = make_pipe("sd15")
    with pytest.raises(UserInputError, match="return_text_stream=False"):
        _run(pipe, reference, num_inference_steps=1, text_stream="window", return_text_stream=True)
