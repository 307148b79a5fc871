"""The modality registry: exact aliases, bands, statistics, keys."""

from __future__ import annotations

import pytest

from terratim import modalities as mods


@pytest.mark.parametrize("name,canonical", [("S2L2A", "S2L2A"), ("s2l2a", "S2L2A"), ("RGB", "S2RGB"),
                                            ("s2rgb", "S2RGB"), ("Location", "COORDS"), ("coordinates", "COORDS"),
                                            ("untok_sen1grd@224", "S1GRD"), ("tok_lulc@224", "LULC")])
def test_resolve_exact_names_and_aliases(name, canonical):
    assert mods.resolve(name).name == canonical


@pytest.mark.parametrize("name", ["S2L1C_L8", "sentinel2", "S2", "lulc_v2", "dem30"])
def test_no_substring_guessing(name):
    with pytest.raises(KeyError, match="valid names"):
        mods.resolve(name)


def test_band_order_and_statistics_from_the_spec():
    s2 = mods.MODALITIES["S2L2A"]
    assert s2.bands[0] == "COASTAL_AEROSOL" and s2.bands[-1] == "SWIR_2" and s2.num_bands == 12
    assert mods.MODALITIES["S2L1C"].bands[10] == "CIRRUS"
    assert mods.MODALITIES["S2RGB"].bands == ("RED", "GREEN", "BLUE")
    assert mods.MODALITIES["S1GRD"].mean == (-12.599, -20.293)
    assert all(len(m.mean) == len(m.std) == m.num_bands for m in mods.MODALITIES.values())


def test_keys():
    assert mods.input_key("S2L2A") == "untok_sen2l2a@224"
    assert mods.input_key("tok_sen2l2a@224") == "tok_sen2l2a@224"
    assert mods.token_key("S2L2A") == "tok_sen2l2a@224"
    assert mods.input_key("LULC") == "tok_lulc@224"
    assert mods.MODALITIES["LULC"].vocab_size == 4375


def test_s2l1c_cannot_be_generated():
    with pytest.raises(ValueError, match="S2L1C cannot be generated.*use S2L2A"):
        mods.token_key("S2L1C")


def test_band_index_by_name_or_sentinel2_id():
    s2 = mods.MODALITIES["S2L2A"]
    assert s2.band_index("RED") == s2.band_index("B04") == 3
    with pytest.raises(TypeError, match="by name"):
        s2.band_index(3)
    with pytest.raises(ValueError, match="no band 'CIRRUS'"):
        s2.band_index("CIRRUS")


def test_the_record_says_which_modalities_are_class_maps():
    """Behaviour is chosen by the record (classes, colours), not by comparing names with "LULC"."""
    from terratim.modalities import MODALITIES, is_image_token_key, is_token_key
    from terratim.tokenizers.model import TokenizerConfig

    categorical = [m.name for m in MODALITIES.values() if m.is_categorical]
    assert categorical == ["LULC"]
    lulc = MODALITIES["LULC"]
    assert len(lulc.classes) == len(lulc.colors) == 10 and lulc.classes[1] == "water"
    assert all(len(c) == 7 and c.startswith("#") for c in lulc.colors)
    config = TokenizerConfig.for_modality("LULC")
    assert config.decoder == "vit" and config.num_classes == len(lulc.classes)
    assert TokenizerConfig.for_modality("DEM").decoder != "vit"
    assert is_image_token_key("tok_lulc@224") and not is_image_token_key("untok_dem@224")
    assert is_token_key("coords") and not is_image_token_key("coords")


def test_one_standardization_for_tensors_and_arrays_with_its_inverse():
    import numpy as np
    import torch

    from terratim.modalities import MODALITIES, denormalize, normalize

    s1 = MODALITIES["S1GRD"]
    x = np.random.default_rng(0).normal(-15.0, 5.0, (2, 8, 8)).astype(np.float32)
    expected = (x.astype(np.float64) - np.asarray(s1.mean)[:, None, None]) / np.asarray(s1.std)[:, None, None]
    np.testing.assert_allclose(s1.standardize(x), expected, rtol=1e-6, atol=1e-6)
    batch = torch.from_numpy(x)[None].repeat(3, 1, 1, 1)  # (B, C, H, W)
    z = normalize(batch, s1.mean, s1.std, "S1GRD")
    torch.testing.assert_close(z.double(), torch.from_numpy(expected)[None].expand(3, -1, -1, -1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(denormalize(z, s1.mean, s1.std), batch, rtol=1e-5, atol=1e-5)
    assert s1.statistics(["VH"]) == ((s1.mean[1],), (s1.std[1],))
    with pytest.raises(ValueError, match="S1GRD: expected 2 bands on axis -3"):
        normalize(torch.zeros(1, 3, 4, 4), s1.mean, s1.std, "S1GRD")
