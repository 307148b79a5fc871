"""ViT encoder/decoder of the tokenizers: position table, sizes, one-hot class inputs."""

from __future__ import annotations

import torch

from terratim.tokenizers.vit import ViTDecoder, ViTEncoder, resized_positions, sincos_grid


def test_position_table_at_its_own_size_is_unchanged():
    table = sincos_grid(16, 64)  # (1, D, 16, 16)
    assert table.shape == (1, 64, 16, 16)
    torch.testing.assert_close(resized_positions(table, 16, 16)[0].T.reshape(64, 16, 16), table[0])
    assert resized_positions(table, 14, 20).shape == (1, 280, 64)


def test_encoder_and_decoder_on_a_non_square_grid():
    encoder = ViTEncoder(3, dim=32, depth=2, num_heads=2).eval()
    x = torch.randn(2, 3, 32, 48)
    feats = encoder(x)
    assert feats.shape == (2, 32, 2, 3)
    layers = encoder(x, return_intermediates=True)
    assert len(layers) == 2 and torch.equal(layers[-1], feats)
    decoder = ViTDecoder(10, dim=32, depth=1, num_heads=2)
    assert decoder(feats).shape == (2, 10, 32, 48)


def test_decoder_unpatchify_layout():
    decoder = ViTDecoder(2, dim=8, depth=0, num_heads=2, patch_size=2)
    with torch.no_grad():
        decoder.norm_mlp.weight.zero_()
        decoder.post_mlp.fc2.bias.zero_()
        decoder.pos_emb.zero_()
        decoder.out_proj.weight.zero_()
        decoder.out_proj.bias.copy_(torch.arange(8.0))  # per token (c, py, px)
    out = decoder(torch.zeros(1, 8, 1, 2))
    assert out[0, 1, 1, 0] == 1 * 4 + 1 * 2 + 0 and out[0, 0, 0, 3] == 1  # token 1, c=0, py=0, px=1
