"""The memory model: live-tensor accounting on the meta device, fused attention, and what it says about modes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infinite_id.evaluation import memory


def test_peak_counts_live_storages_once_and_not_the_inputs():
    weight = torch.empty(256, 256, device="meta")  # 256 KiB, existed before: never counted

    def run():
        a = torch.empty(1024, 256, device="meta")  # 1 MiB
        view = a.t()  # a view: no new storage
        b = view @ torch.ones(1024, 1, device="meta")  # 1 KiB
        del a, view
        c = torch.empty(2 * 1024, 256, device="meta")  # 2 MiB, after the first is freed
        return b, c, weight.t()

    # peak: c (2 MiB) while b (1 KiB) lives; the 4 KiB ones were freed after the product, a before c
    assert memory.activation_peak(run, external=[weight]) == 2 * 2**20 + 1024


def test_attention_is_priced_as_the_fused_kernel_not_the_score_matrix():
    def attend(tokens: int):
        q = torch.empty(1, 8, tokens, 64, device="meta")
        return memory.activation_peak(lambda: F.scaled_dot_product_attention(q, q, q), external=[q])

    small, large = attend(1024), attend(4096)
    assert large == 4 * small  # linear in the tokens; the math path's N x N scores would make it 16x
    assert small == 8 * 1024 * 64 * 4 + 8 * 1024 * 4  # output + float32 logsumexp


def test_unet_step_peaks_order_the_modes():
    peaks = {v: memory.unet_step_peak("tiny", v, 64, torch.float16) for v in ("plain", "identity", "two-stream")}
    assert 0 < peaks["plain"] <= peaks["identity"] < peaks["two-stream"] <= 2.2 * peaks["identity"]


def test_decoding_two_images_in_one_call_doubles_the_decode_peak():
    tiny = dict(memory.SDXL_VAE, block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=32)  # fmt: skip
    one = memory.vae_decode_peak(64, torch.float32, 1, config=tiny)
    two = memory.vae_decode_peak(64, torch.float32, 2, config=tiny)
    assert one > 0 and abs(two - 2 * one) <= 0.01 * two
