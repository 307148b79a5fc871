"""FSQ: exact id <-> code round trips, mixed-radix layout, straight-through gradients."""

from __future__ import annotations

import pytest
import torch

from terratim.modalities import FSQ_LEVELS_IMAGE, FSQ_LEVELS_LULC
from terratim.tokenizers import FSQ


@pytest.mark.parametrize(("levels", "vocab"), [(FSQ_LEVELS_IMAGE, 15360), (FSQ_LEVELS_LULC, 4375)])
def test_every_id_round_trips_exactly(levels, vocab):
    fsq = FSQ(levels)
    assert fsq.vocab_size == vocab
    ids = torch.arange(vocab).reshape(1, -1, 1)  # (B, h, w)
    codes = fsq.ids_to_codes(ids)
    assert codes.shape == (1, len(levels), vocab, 1)
    assert codes.min() == 0 and codes.max() == 1
    assert torch.equal(fsq.codes_to_ids(codes), ids)
    # codes are the level grid, so quantizing latents that hit them exactly gives the same ids back
    latents = torch.logit(codes.double().clamp(1e-6, 1 - 1e-6)).float()
    requant_codes, requant_ids = fsq.quantize(latents)
    assert torch.equal(requant_ids, ids) and torch.equal(requant_codes, codes)


def test_basis_is_mixed_radix_first_channel_least_significant():
    fsq = FSQ(FSQ_LEVELS_IMAGE)
    assert fsq.basis.tolist() == [1, 8, 64, 512, 3072]
    assert FSQ(FSQ_LEVELS_LULC).basis.tolist() == [1, 7, 35, 175, 875]
    numbers = torch.tensor([3, 1, 0, 5, 4]).view(1, 5, 1, 1)
    codes = numbers / (torch.tensor(FSQ_LEVELS_IMAGE).view(1, 5, 1, 1) - 1)
    assert int(fsq.codes_to_ids(codes)) == 3 + 1 * 8 + 5 * 512 + 4 * 3072


def test_quantize_rounds_sigmoid_onto_levels():
    fsq = FSQ(FSQ_LEVELS_IMAGE)
    latents = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0)) * 3
    codes, ids = fsq(latents)
    span = (torch.tensor(FSQ_LEVELS_IMAGE) - 1).view(1, 5, 1, 1)
    assert torch.equal(codes * span, (torch.sigmoid(latents) * span).round())
    assert ids.shape == (2, 3, 4) and ids.dtype == torch.int64
    assert torch.equal(fsq.ids_to_codes(ids), codes)


def test_straight_through_gradient_is_the_sigmoid_derivative():
    fsq = FSQ(FSQ_LEVELS_IMAGE)
    latents = torch.randn(1, 5, 2, 2, requires_grad=True)
    codes, _ = fsq(latents)
    codes.sum().backward()
    s = torch.sigmoid(latents.detach())
    torch.testing.assert_close(latents.grad, s * (1 - s))


def test_bad_ids_and_latents_raise():
    fsq = FSQ(FSQ_LEVELS_LULC)
    with pytest.raises(ValueError, match=r"\[0, 4375\)"):
        fsq.ids_to_codes(torch.tensor([[[4375]]]))
    with pytest.raises(ValueError, match="got values in"):
        fsq.ids_to_codes(torch.tensor([[[-1]]]))
    with pytest.raises(TypeError, match="integer"):
        fsq.ids_to_codes(torch.tensor([[[1.0]]]))
    with pytest.raises(ValueError, match="latents"):
        fsq.quantize(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match=">= 2"):
        FSQ((8, 1))
