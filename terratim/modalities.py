"""The modality registry: the one source of truth for names, bands, statistics and checkpoint keys.

Every part of terratim (models, data modules, generation, plots) looks modalities up here by exact name.
User names are matched case-insensitively against an explicit alias table; there is no substring guessing.

Two kinds of checkpoint key exist per modality (the keys of TerraTorch's
terratorch/models/backbones/terramind/model/modality_info.py):

* ``input_key`` - the encoder embedding used when the modality is *given* to the model: a raw-pixel patch
  embedding (``untok_sen2l2a@224``), a token table for tokenized inputs (``tok_lulc@224``) or a sequence
  table (``coords``).
* ``token_key`` - the token domain used when the modality is *generated* (decoder targets, TiM): e.g.
  ``tok_sen2l2a@224``. ``None`` means the modality cannot be generated.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

ModalityKind = Literal["image", "tokens", "sequence"]
FILL_METHODS = ("mean",)  # how absent pretrained bands may be filled (fill_missing_bands=...)

# fmt: off
S2L2A_BANDS = (
    "COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3",
    "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2",
)
S2L1C_BANDS = S2L2A_BANDS[:10] + ("CIRRUS",) + S2L2A_BANDS[10:]

# Sentinel-2 band ids, so users may say "B04" instead of "RED".
SENTINEL2_BAND_IDS = {
    "B01": "COASTAL_AEROSOL", "B02": "BLUE", "B03": "GREEN", "B04": "RED", "B05": "RED_EDGE_1",
    "B06": "RED_EDGE_2", "B07": "RED_EDGE_3", "B08": "NIR_BROAD", "B8A": "NIR_NARROW", "B09": "WATER_VAPOR",
    "B10": "CIRRUS", "B11": "SWIR_1", "B12": "SWIR_2",
}

FSQ_LEVELS_IMAGE = (8, 8, 8, 6, 5)  # vocabulary 15,360
FSQ_LEVELS_LULC = (7, 5, 5, 5, 5)  # vocabulary 4,375

# The 10-class land-cover scheme of TerraMesh (compacted ESRI 10 m classes).
LULC_CLASSES = (
    "no data", "water", "trees", "flooded vegetation", "crops", "built area", "bare ground", "snow/ice",
    "clouds", "rangeland",
)
LULC_COLORS = (
    "#000000", "#1f5fd1", "#1b6e2a", "#7fd37f", "#f2d541", "#e377c2", "#8c564b", "#9edae5", "#f4f4f4",
    "#ff9f1c",
)
# fmt: on


@dataclass(frozen=True)
class Modality:
    """One TerraMind v1 modality.

    Attributes:
        name: canonical user name, e.g. ``"S2L2A"``.
        kind: ``"image"`` (raw pixels through a patch embedding), ``"tokens"`` (an image given as token ids
            from its tokenizer) or ``"sequence"`` (a token sequence such as coordinates).
        description: one line for ``terratim info``.
        bands: band names in the pretrained order.
        mean: pretraining standardization mean per band (z = (x - mean) / std).
        std: pretraining standardization std per band.
        input_key: checkpoint key of the encoder embedding when this modality is an input.
        token_key: checkpoint key of the token domain when this modality is generated, or None.
        vocab_size: vocabulary of the token domain (0 when there is none).
        fsq_levels: FSQ levels of the modality's tokenizer (empty when there is none).
        tokenizer_repo: Hugging Face repo id of the tokenizer weights.
        tokenizer_file: file name of the tokenizer weights in that repo.
        units: physical units of the raw values.
        classes: class names of a categorical modality (class id i is ``classes[i]``); empty for continuous ones.
        colors: one ``#rrggbb`` colour per class, for maps and GeoTIFF colour tables.
    """

    name: str
    kind: ModalityKind
    description: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_key: str
    token_key: str | None
    vocab_size: int = 0
    fsq_levels: tuple[int, ...] = ()
    tokenizer_repo: str | None = None
    tokenizer_file: str | None = None
    units: str = ""
    classes: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()

    @property
    def is_categorical(self) -> bool:
        """True for class maps (LULC): values are class ids, never standardized; decoders give class logits."""
        return bool(self.classes)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def is_image(self) -> bool:
        """True for modalities that are images (raw pixels or image tokens), False for sequences."""
        return self.kind != "sequence"

    def standardize(self, x: Any, bands: tuple[str, ...] | None = None) -> Any:
        """(x - mean) / std per band for a (B, C, H, W) or (C, H, W) tensor/array (optionally a band subset)."""
        mean, std = self.statistics(bands)
        return normalize(x, mean, std, self.name)

    def destandardize(self, x: Any, bands: tuple[str, ...] | None = None) -> Any:
        """Inverse of :meth:`standardize`."""
        mean, std = self.statistics(bands)
        return denormalize(x, mean, std, self.name)

    def statistics(
        self, bands: tuple[str, ...] | list[str] | None = None
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Pretraining (mean, std) per band, of all bands or of ``bands`` (names) in that order."""
        index = [self.band_index(b) for b in bands] if bands else list(range(self.num_bands))
        return tuple(self.mean[i] for i in index), tuple(self.std[i] for i in index)

    def band_index(self, band: str) -> int:
        """Position of ``band`` (a band name or Sentinel-2 id such as ``"B04"``) in the pretrained order."""
        if not isinstance(band, str):
            raise TypeError(
                f"{self.name}: bands must be given by name (one of {list(self.bands)}), got {band!r}. "
                "Integer band indices are ambiguous and are not accepted."
            )
        wanted = SENTINEL2_BAND_IDS.get(band.upper(), band.upper())
        if wanted not in self.bands:
            raise ValueError(f"{self.name} has no band {band!r}; pretrained bands are {list(self.bands)}")
        return self.bands.index(wanted)

    def missing_bands(self, given: Sequence[str]) -> tuple[str, ...]:
        """Pretrained bands absent from ``given`` (band names or Sentinel-2 ids), in pretrained order.

        Raises:
            ValueError: for a band this modality does not have, or a band given twice.
        """
        index = [self.band_index(b) for b in given]
        repeated = sorted({self.bands[i] for i in index if index.count(i) > 1})
        if repeated:
            raise ValueError(f"{self.name}: bands {repeated} are given twice; each band once")
        return tuple(b for i, b in enumerate(self.bands) if i not in index)

    def fill_bands(self, x: Any, given: Sequence[str], standardized: bool = True) -> Any:
        """``x`` holding the ``given`` bands (in that order, on axis -3) -> every pretrained band in pretrained
        order, the absent ones set to their pretraining mean (0 when ``standardized``, the raw mean otherwise).

        Args:
            x: (C', H, W) or (B, C', H, W) torch tensor or numpy array, C' = len(given).
            given: band names (or Sentinel-2 ids) of x's channels.
            standardized: x is standardized (absent bands become 0) or in raw units (absent bands become the mean).
        """
        self.missing_bands(given)  # checks the names
        index = [self.band_index(b) for b in given]
        if x.ndim < 3 or x.shape[-3] != len(index):
            raise ValueError(
                f"{self.name}: expected {len(index)} bands ({', '.join(given)}) on axis -3, got shape {tuple(x.shape)}"
            )
        planes = []
        for band in range(self.num_bands):
            if band in index:
                planes.append(x[..., index.index(band), :, :])  # (..., H, W)
            else:
                value = 0.0 if standardized else self.mean[band]
                planes.append(_full_like(x[..., 0, :, :], value))
        return _stack_bands(planes, x)  # (..., C, H, W)


def check_fill_method(value: Any) -> str | None:
    """``fill_missing_bands`` checked: None (absent bands are an error) or one of :data:`FILL_METHODS`."""
    if value is not None and value not in FILL_METHODS:
        raise ValueError(f"fill_missing_bands must be None or one of {list(FILL_METHODS)}; got {value!r}")
    return value


def warn_filled_bands(name: str, missing: Sequence[str]) -> None:
    """Warn that ``missing`` bands of modality ``name`` are filled with their pretraining mean."""
    if missing:
        warnings.warn(
            f"{name}: bands {', '.join(missing)} are missing and filled with their pretraining mean (0 "
            "after standardization); the model was pretrained on real values for them, so results "
            "degrade",
            UserWarning,
            stacklevel=3,
        )


def _full_like(x: Any, value: float) -> Any:
    if hasattr(x, "new_tensor"):  # torch
        import torch

        return torch.full_like(x, value)
    import numpy as np

    return np.full_like(x, value)


def _stack_bands(planes: list[Any], like: Any) -> Any:
    if hasattr(like, "new_tensor"):  # torch
        import torch

        return torch.stack(planes, dim=-3)
    import numpy as np

    return np.stack(planes, axis=-3)


def normalize(x: Any, mean: Any, std: Any, what: str = "input") -> Any:
    """``(x - mean) / std`` per band: the one standardization of terratim.

    Args:
        x: (C, H, W) or (B, C, H, W) torch tensor or numpy array; bands on axis -3.
        mean: one value per band (sequence, array or tensor).
        std: one value per band.
        what: a name for the error message (e.g. the modality).
    """
    return (x - _per_band(x, mean, what)) / _per_band(x, std, what)


def denormalize(z: Any, mean: Any, std: Any, what: str = "input") -> Any:
    """Inverse of :func:`normalize`: ``z * std + mean`` per band."""
    return z * _per_band(z, std, what) + _per_band(z, mean, what)


def _per_band(x: Any, values: Any, what: str) -> Any:
    """``values`` as a (C, 1, 1) tensor / array of ``x``'s dtype (and device), checked against x's bands."""
    column: Any
    if hasattr(x, "new_tensor"):  # torch
        import torch

        column = torch.as_tensor(values, dtype=x.dtype, device=x.device)
    else:
        import numpy as np

        column = np.asarray(values, dtype=x.dtype)
    if column.ndim != 1 or x.ndim < 3 or column.shape[0] != x.shape[-3]:
        raise ValueError(f"{what}: expected {column.shape[0]} bands on axis -3, got shape {tuple(x.shape)}")
    return column.reshape(-1, 1, 1)


def _tok_repo(mod: str) -> str:
    return f"ibm-esa-geospatial/TerraMind-1.0-Tokenizer-{mod}"


# fmt: off
_S2L2A_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22,
               3162.988, 2424.884, 1857.648)
_S2L2A_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829,
              1797.379, 1434.261, 1334.311)

MODALITIES: dict[str, Modality] = {
    m.name: m
    for m in (
        Modality(
            "S2L2A", "image", "Sentinel-2 L2A surface reflectance (12 bands, digital numbers)",
            S2L2A_BANDS, _S2L2A_MEAN, _S2L2A_STD, "untok_sen2l2a@224", "tok_sen2l2a@224", 15360,
            FSQ_LEVELS_IMAGE, _tok_repo("S2L2A"), "TerraMind_Tokenizer_S2L2A.pt", "DN (reflectance x 10000)",
        ),
        Modality(
            "S2L1C", "image", "Sentinel-2 L1C top-of-atmosphere reflectance (13 bands, digital numbers)",
            S2L1C_BANDS,
            (2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.56, 3306.481,
             1473.847, 506.07, 2472.825, 1838.929),
            (1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26,
             1024.687, 442.165, 1331.411, 1160.419),
            "untok_sen2l1c@224", None, units="DN (reflectance x 10000)",
        ),
        Modality(
            "S2RGB", "image", "Sentinel-2 true-colour composite (uint8 RGB)",
            ("RED", "GREEN", "BLUE"), (87.271, 80.931, 66.667), (58.767, 47.663, 42.631),
            "untok_sen2rgb@224", None, units="uint8 0-255",
        ),
        Modality(
            "S1GRD", "image", "Sentinel-1 GRD backscatter (VV, VH) in dB",
            ("VV", "VH"), (-12.599, -20.293), (5.195, 5.890), "untok_sen1grd@224", "tok_sen1grd@224", 15360,
            FSQ_LEVELS_IMAGE, _tok_repo("S1GRD"), "TerraMind_Tokenizer_S1GRD.pt", "dB",
        ),
        Modality(
            "S1RTC", "image", "Sentinel-1 radiometrically terrain-corrected backscatter (VV, VH) in dB",
            ("VV", "VH"), (-10.93, -17.329), (4.391, 4.459), "untok_sen1rtc@224", "tok_sen1rtc@224", 15360,
            FSQ_LEVELS_IMAGE, _tok_repo("S1RTC"), "TerraMind_Tokenizer_S1RTC.pt", "dB",
        ),
        Modality(
            "DEM", "image", "Copernicus digital elevation model",
            ("DEM",), (670.665,), (951.272,), "untok_dem@224", "tok_dem@224", 15360,
            FSQ_LEVELS_IMAGE, _tok_repo("DEM"), "TerraMind_Tokenizer_DEM.pt", "m",
        ),
        Modality(
            "LULC", "tokens", "Land use / land cover, 10 classes (given as class ids, tokenized inside)",
            ("LULC",), (0.0,), (1.0,), "tok_lulc@224", "tok_lulc@224", 4375,
            FSQ_LEVELS_LULC, _tok_repo("LULC"), "TerraMind_Tokenizer_LULC.pt", "class id 0-9",
            classes=LULC_CLASSES, colors=LULC_COLORS,
        ),
        Modality(
            "NDVI", "tokens", "Normalized difference vegetation index (tokenized inside)",
            ("NDVI",), (0.327,), (0.322,), "tok_ndvi@224", "tok_ndvi@224", 15360,
            FSQ_LEVELS_IMAGE, _tok_repo("NDVI"), "TerraMind_Tokenizer_NDVI.pt", "index -1..1",
        ),
        Modality(
            "COORDS", "sequence", "Location as (lon, lat) in degrees, tokenized as text",
            ("LON", "LAT"), (0.0, 0.0), (1.0, 1.0), "coords", "coords", 30000,
            tokenizer_repo="ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords", tokenizer_file="config.json",
            units="degrees",
        ),
    )
}
# fmt: on

# Explicit aliases (lower-case). Canonical names and internal checkpoint keys are accepted too.
ALIASES: dict[str, str] = {
    "rgb": "S2RGB",
    "s2-l2a": "S2L2A",
    "s2-l1c": "S2L1C",
    "s1-grd": "S1GRD",
    "s1-rtc": "S1RTC",
    "coordinates": "COORDS",
    "location": "COORDS",
    "lulc_map": "LULC",
}


def _alias_table() -> dict[str, str]:
    table = {name.lower(): name for name in MODALITIES}
    table.update(ALIASES)
    return table


_LOOKUP = _alias_table()
# Internal checkpoint keys map to the modality that owns them ("tok_sen2l2a@224" -> S2L2A as tokens).
KEY_OWNERS: dict[str, str] = {}
for _m in MODALITIES.values():
    KEY_OWNERS.setdefault(_m.input_key, _m.name)
    if _m.token_key is not None:
        KEY_OWNERS.setdefault(_m.token_key, _m.name)


def valid_names() -> list[str]:
    """Every accepted user name (canonical names and aliases)."""
    return sorted(set(MODALITIES) | {a.upper() for a in ALIASES})


def resolve(name: str) -> Modality:
    """Return the modality for a user name, alias or internal key (exact, case-insensitive).

    Raises:
        KeyError: listing the valid names, when ``name`` is unknown.
    """
    if not isinstance(name, str):
        raise TypeError(f"modality names are strings, got {name!r}")
    canonical = _LOOKUP.get(name.lower()) or KEY_OWNERS.get(name)
    if canonical is None:
        raise KeyError(f"unknown modality {name!r}; valid names: {', '.join(valid_names())}")
    return MODALITIES[canonical]


def input_key(name: str) -> str:
    """Encoder embedding key for ``name`` given as an input. A literal ``tok_*`` key selects token input."""
    if name in KEY_OWNERS:
        return name
    return resolve(name).input_key


def token_key(name: str) -> str:
    """Token-domain key for ``name`` as a generation / TiM target.

    Raises:
        ValueError: when the modality cannot be generated (e.g. S2L1C, S2RGB).
    """
    modality = resolve(name)
    if modality.token_key is None:
        generatable = [m.name for m in MODALITIES.values() if m.token_key is not None]
        raise ValueError(
            f"{modality.name} cannot be generated: TerraMind v1 has no {modality.name} tokens. "
            f"Generatable modalities: {generatable} (for Sentinel-2 use S2L2A)"
        )
    return modality.token_key


def key_modality(key: str) -> Modality:
    """The modality owning an internal checkpoint key."""
    if key not in KEY_OWNERS:
        raise KeyError(f"unknown modality key {key!r}; known keys: {sorted(KEY_OWNERS)}")
    return MODALITIES[KEY_OWNERS[key]]


def is_image_token_key(key: str) -> bool:
    """True for keys of image token grids (``tok_*``: ids of an image tokenizer, (B, h, w) or (B, h*w))."""
    return key.startswith("tok_")


def is_token_key(key: str) -> bool:
    """True for keys whose inputs are token ids (``tok_*`` image tokens and sequences)."""
    return is_image_token_key(key) or key_modality(key).kind == "sequence"
