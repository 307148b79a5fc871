"""A simulated multi-sensor Earth: co-registered S2L2A, S1GRD, DEM, LULC, NDVI and a water-extent label.

**Everything here is simulated.** No pixel comes from a satellite. The simulator exists so that tokenizer
training, pretraining, fine-tuning and the offline quickstart can run on any machine without downloads. It
aims for *physically sensible* relations and *value ranges that match the real samples* in
``tests/data/terramesh_examples`` and ``tests/data/sen1floods11``, not for realism of appearance.

One sample is one square chip at 10 m ground sampling, generated in five steps:

1. **Terrain** (DEM, metres): a base elevation (lowland / upland / mountain) plus fractal relief from a
   power-law spectrum (FFT synthesis, beta = 3).
2. **Land cover** (LULC, the 10-class scheme of :data:`terratim.modalities.LULC_CLASSES`): per-class smooth
   random fields plus terrain priors (trees on slopes, crops on flat ground as rectangular parcels, built
   clusters, bare ground and snow high up), argmax. Water fills the lowest ground up to a water level; when a
   flood is simulated, vegetation in an elevation band just above the water level becomes *flooded vegetation*
   and bare ground there becomes open water. Classes 0 (no data) and 8 (clouds) never occur: the map is an
   annual, cloud-free product, like the ESRI maps TerraMesh uses.
3. **S2L2A** (12 bands, digital numbers = reflectance x 10000, band order of the registry): per-class spectral
   signatures read off the real TerraMesh examples, per-parcel and per-pixel variation, crop greenness per
   field, haze, hill shading and **clouds with shadows (optical only)**.
4. **NDVI** = (B08 - B04) / (B08 + B04) of the simulated S2L2A, clouds included (as in TerraMesh).
5. **S1GRD** (VV, VH in dB): per-class backscatter (calm or wind-roughened water is dark, flooded vegetation
   is brightened in VV by double bounce, built area has bright point scatterers), local-incidence terrain
   modulation in the range direction, and multiplicative gamma speckle (equivalent number of looks ~4.4, about
   2 dB per pixel). Clouds do not affect S1.

The task label ``WATER`` (uint8, 1 = surface water at acquisition time) is open water plus flooded
vegetation, like the hand labels of Sen1Floods11, **mapped at the scale an analyst can see it in S1**: a pixel is
water when most of the ``label_window`` x ``label_window`` pixels around it (5 x 5 = 50 m by default) are open
water or flooded vegetation. The physical reason: the flood margin follows the fractal terrain, whose relief has no
smallest scale, so the per-pixel land cover flickers between flooded and dry along every shore (single pixels,
ragged bands). Nobody can map that from Sentinel-1: with ~4.4 looks each pixel scatters by ~2 dB, as much as the
1-2 dB that separate flooded vegetation from trees, and only averaging about 4 x 4 pixels or more brings the
scatter (2 dB / sqrt(n)) below that contrast. Hand labels such as Sen1Floods11's are therefore drawn as
coherent areas at this scale: 0.04 % of their pixels are isolated (no 8-neighbour with the same label), against
0.3 % for the per-pixel land cover and 0.01 % for the 5 x 5 majority (64 px crops; ``benchmarks/tim_study.py``).
The majority keeps the water share (within 1 %) and uses no randomness, so every other array of a sample is
unchanged by it (``label_window=1`` gives the per-pixel label).

Per pixel, S1 separates flooded vegetation from trees only weakly (about 1-2 dB apart under ~2 dB speckle);
over a neighbourhood, and from context (it rings the water in low ground), the two separate well. That is the
situation where a model that learned land cover from many unlabelled multimodal samples can help a model
trained on few labels. The label is *defined* from the land cover of the same world, which the documentation of
any result on this data must say.

Randomness: every sample is drawn from ``np.random.default_rng([seed, index])`` and each physical component
uses its own child stream, so e.g. switching clouds off leaves S1, DEM and LULC of a sample unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terratim.modalities import MODALITIES

# LULC class ids (terratim.modalities.LULC_CLASSES).
NODATA, WATER, TREES, FLOODED_VEG, CROPS, BUILT, BARE, SNOW, CLOUDS, RANGELAND = range(10)

SIM_MODALITIES = ("S2L2A", "S1GRD", "DEM", "LULC", "NDVI")
LABEL = "WATER"

# Spectral signatures, DN, bands B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12 (class medians of the
# TerraMesh examples, rounded; flooded vegetation interpolated between trees and water).
_SIGNATURES = {
    WATER: (550, 520, 600, 420, 420, 330, 320, 260, 250, 200, 150, 110),
    TREES: (200, 220, 420, 230, 700, 2000, 2400, 2600, 2700, 2700, 1200, 500),
    FLOODED_VEG: (320, 340, 560, 380, 780, 1500, 1750, 1850, 1900, 1900, 700, 330),
    CROPS: (400, 480, 800, 700, 1250, 2300, 2650, 2850, 2950, 2950, 2300, 1350),
    BUILT: (1200, 1300, 1450, 1600, 1800, 2100, 2250, 2400, 2450, 2500, 2700, 2300),
    BARE: (1700, 2200, 2700, 3000, 3300, 3400, 3500, 3600, 3700, 3200, 4500, 4100),
    SNOW: (7000, 7100, 6800, 6600, 6700, 6600, 6500, 6700, 6400, 6200, 1150, 1200),
    RANGELAND: (450, 500, 750, 850, 1300, 2000, 2250, 2450, 2550, 2550, 2700, 1800),
}
_BARE_SOIL = np.array(_SIGNATURES[BARE], np.float32) * 0.55  # a ploughed field between crops
_CLOUD = np.array((5200, 5400, 5300, 5500, 5600, 5800, 5900, 6000, 6000, 4200, 4300, 3600), np.float32)

# Backscatter class means (VV, VH) in dB; water is set per sample from the wind.
_BACKSCATTER = {
    TREES: (-7.5, -13.5),
    FLOODED_VEG: (-6.3, -15.2),
    CROPS: (-11.0, -17.5),
    BUILT: (-5.0, -11.5),
    BARE: (-16.0, -23.0),
    SNOW: (-14.5, -22.0),
    RANGELAND: (-12.0, -18.5),
}
_ENL = 4.4  # equivalent number of looks of Sentinel-1 IW GRD high resolution
_NIR, _RED = 7, 3  # band indices of B08 and B04


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulated world (defaults give TerraMesh-like variety).

    Attributes:
        size: chip side in pixels (10 m each).
        cloud_prob: probability that a chip has clouds in S2.
        water_prob: probability that a chip has open water.
        flood_prob: probability, given water, that the chip shows a flood (flooded vegetation).
        built_prob: probability that a chip has built-up area.
        label_window: odd side in pixels of the majority window that maps the water label (1: per pixel).
    """

    size: int = 224
    cloud_prob: float = 0.4
    water_prob: float = 0.7
    flood_prob: float = 0.7
    built_prob: float = 0.5
    label_window: int = 5

    def __post_init__(self) -> None:
        if self.label_window < 1 or self.label_window % 2 == 0:
            raise ValueError(f"SimConfig.label_window must be an odd number of pixels >= 1, got {self.label_window}")


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Gaussian random field with correlation length ``scale`` pixels, zero mean, unit std. (H, W) float32."""
    white = rng.standard_normal((size, size), dtype=np.float32)
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    kernel = np.exp(-2.0 * (np.pi * scale) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=(size, size)).astype(np.float32)
    return (field - field.mean()) / (field.std() + 1e-6)


def fractal_noise(rng: np.random.Generator, size: int, beta: float = 3.0) -> np.ndarray:
    """Power-law (1/f^beta) random field scaled to [0, 1]; beta = 3 gives terrain-like relief. (H, W)."""
    white = rng.standard_normal((size, size), dtype=np.float32)
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size).astype(np.float32)[None, :]
    freq = np.sqrt(fx**2 + fy**2)
    freq[0, 0] = 1.0
    amplitude = freq ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(size, size)).astype(np.float32)
    return (field - field.min()) / (np.ptp(field) + 1e-6)


def _streams(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    seeds = rng.integers(0, 2**63 - 1, size=n)
    return [np.random.default_rng(int(s)) for s in seeds]


def _terrain(rng: np.random.Generator, size: int) -> np.ndarray:
    """DEM in metres. (H, W) float32."""
    regime = rng.choice(3, p=(0.5, 0.35, 0.15))  # lowland, upland, mountain
    base = (rng.uniform(0, 250), rng.uniform(250, 1500), rng.uniform(1500, 3500))[regime]
    relief = (rng.uniform(2, 40), rng.uniform(20, 250), rng.uniform(200, 1200))[regime] * size / 224
    return (base + relief * fractal_noise(rng, size)).astype(np.float32)


def _slope(dem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Terrain gradients d(dem)/dy, d(dem)/dx in metres per metre (10 m pixels)."""
    gy, gx = np.gradient(dem, 10.0)
    return gy.astype(np.float32), gx.astype(np.float32)


def _parcels(rng: np.random.Generator, size: int) -> np.ndarray:
    """Field ids of a rotated grid of rectangular parcels (20-45 px sides). (H, W) int64."""
    theta = rng.uniform(0, np.pi / 2)
    a, b = rng.uniform(20, 45, size=2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    u = np.floor((x * np.cos(theta) + y * np.sin(theta)) / a).astype(np.int64)
    v = np.floor((-x * np.sin(theta) + y * np.cos(theta)) / b).astype(np.int64)
    u -= u.min()
    v -= v.min()
    return u * (v.max() + 1) + v


def _land_cover(rng: np.random.Generator, dem: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """LULC class map and water level from terrain. (H, W) uint8."""
    size = dem.shape[0]
    gy, gx = _slope(dem)
    steep = np.clip(np.hypot(gy, gx) / 0.3, 0, 1)  # 1 at ~17 degrees
    high = np.clip((dem - 1200.0) / 1500.0, 0, 1)
    weights = rng.dirichlet(np.full(5, 1.2)) * 3.0  # biome: how much of each class this chip favours
    scale = rng.uniform(12, 40) * size / 224
    score = {
        TREES: weights[0] + smooth_noise(rng, size, scale) + 1.5 * steep,
        CROPS: weights[1] + 0.3 + smooth_noise(rng, size, scale * 1.5) - 2.0 * steep - 2.0 * high,
        RANGELAND: weights[2] + smooth_noise(rng, size, scale),
        BARE: weights[3] - 0.8 + smooth_noise(rng, size, scale) + 1.5 * high,
        BUILT: (
            weights[4] - 1.0 + smooth_noise(rng, size, scale * 0.6) - 2.0 * steep - 2.0 * high
            if rng.random() < cfg.built_prob
            else np.full_like(dem, -np.inf)
        ),
    }
    classes = np.array(list(score), np.uint8)
    lulc = classes[np.argmax(np.stack(list(score.values())), axis=0)]
    snowline = rng.uniform(2600, 4200)
    lulc[dem + 150 * smooth_noise(rng, size, 10) > snowline] = SNOW
    if rng.random() < cfg.water_prob:
        water_frac = rng.uniform(0.04, 0.45)
        level = np.quantile(dem, water_frac)
        flood_band = 0.0
        if rng.random() < cfg.flood_prob:
            flood_band = np.quantile(dem, min(water_frac + rng.uniform(0.08, 0.35), 0.95)) - level
        jitter = 0.05 * np.ptp(dem) * smooth_noise(rng, size, 6)  # ragged shores
        height = dem - level + jitter * (flood_band > 0)
        flooded = (height >= 0) & (height < flood_band)
        vegetated = np.isin(lulc, (TREES, CROPS, RANGELAND))
        lulc[flooded & vegetated] = FLOODED_VEG
        lulc[flooded & (lulc == BARE)] = WATER
        lulc[dem < level] = WATER
    return lulc


def _reflectance(rng: np.random.Generator, lulc: np.ndarray, dem: np.ndarray, parcels: np.ndarray) -> np.ndarray:
    """Cloud-free S2L2A surface reflectance in DN. (12, H, W) float32."""
    size = lulc.shape[0]
    table = np.zeros((10, 12), np.float32)
    for cls, sig in _SIGNATURES.items():
        table[cls] = sig
    table *= rng.lognormal(0.0, 0.12, size=(10, 1)).astype(np.float32)  # chip-level variety per class
    s2 = table[lulc].transpose(2, 0, 1)  # (12, H, W)
    # Crops: greenness per parcel mixes green canopy with bare soil.
    green = rng.beta(2.0, 1.5, size=parcels.max() + 1).astype(np.float32)[parcels]
    crops = lulc == CROPS
    s2[:, crops] = s2[:, crops] * green[crops] + _BARE_SOIL[:, None] * (1 - green[crops])
    # Parcel / patch brightness variation, pixel noise, hill shading (sun from the south-east).
    patch = rng.lognormal(0.0, 0.1, size=parcels.max() + 1).astype(np.float32)[parcels]
    texture = np.exp(0.08 * smooth_noise(rng, size, 2.0))
    gy, gx = _slope(dem)
    shade = np.clip(1.0 + 1.5 * (gy * 0.7 - gx * 0.7), 0.4, 1.6)
    noise = rng.normal(1.0, 0.04, size=(12, size, size)).astype(np.float32)
    return s2 * (patch * texture * shade)[None] * noise


def _atmosphere(rng: np.random.Generator, s2: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """Haze (visible bands) and, with probability ``cloud_prob``, clouds and their shadows. (12, H, W)."""
    size = s2.shape[-1]
    haze = rng.exponential(350.0) * np.array([1.0, 0.8, 0.6, 0.45] + [0.2] * 8, np.float32)
    s2 = s2 + haze[:, None, None]
    if rng.random() < cfg.cloud_prob:
        field = smooth_noise(rng, size, rng.uniform(6, 20) * size / 224)
        cover = rng.uniform(0.05, 0.7)
        edge = np.quantile(field, 1 - cover)
        alpha = np.clip((field - edge) / 0.6, 0, 1)  # optical thickness 0..1 with soft edges
        dy, dx = rng.integers(-size // 12, size // 12 + 1, size=2)
        shadow = 1.0 - 0.55 * np.roll(alpha, (int(dy), int(dx)), axis=(0, 1))
        brightness = rng.uniform(0.7, 1.3)
        s2 = s2 * shadow[None]
        s2 = s2 * (1 - alpha[None]) + (_CLOUD * brightness)[:, None, None] * alpha[None]
    return np.clip(np.round(s2), 1, 15000).astype(np.float32)


def _backscatter(rng: np.random.Generator, lulc: np.ndarray, dem: np.ndarray, parcels: np.ndarray) -> np.ndarray:
    """S1GRD VV, VH in dB with terrain modulation and speckle. (2, H, W) float32."""
    size = lulc.shape[0]
    table = np.zeros((10, 2), np.float32)
    for cls, (vv, vh) in _BACKSCATTER.items():
        table[cls] = (vv, vh)
    table += rng.normal(0.0, 1.0, size=(10, 1)).astype(np.float32)  # moisture / season per chip
    wind = rng.beta(1.2, 3.0)  # calm water is dark, wind roughens it
    table[WATER] = (-23.0 + 11.0 * wind, -28.5 + 6.0 * wind)
    table[BARE] += rng.uniform(-4.0, 3.0)  # dry sand is as dark as water, wet soil much brighter
    db = table[lulc].transpose(2, 0, 1)  # (2, H, W)
    field_offset = rng.normal(0.0, 2.0, size=(2, parcels.max() + 1)).astype(np.float32)
    crops = lulc == CROPS
    db[:, crops] += field_offset[:, parcels[crops]]
    land = lulc != WATER
    db += (0.8 * smooth_noise(rng, size, 3.0) * land)[None]
    built = lulc == BUILT
    db[:, built] += 7.0 * (rng.random(int(built.sum()), dtype=np.float32) < 0.08)  # corner reflectors
    _, gx = _slope(dem)
    db += np.clip(-12.0 * gx, -5.0, 5.0)[None] * land  # range slope facing the sensor brightens
    looks = rng.gamma(_ENL, 1.0 / _ENL, size=(2, size, size)).astype(np.float32)
    return (db + 10.0 * np.log10(np.maximum(looks, 1e-4))).astype(np.float32)


def box_mean(mask: np.ndarray, window: int) -> np.ndarray:
    """Mean of ``mask`` (H, W) over the ``window`` x ``window`` pixels around each pixel, mirrored at the edges
    (numpy ``reflect``). (H, W) float64."""
    r = window // 2
    padded = np.pad(mask.astype(np.float64), r, mode="reflect")
    total = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (H + 2r + 1, W + 2r + 1) summed-area table
    h, w = mask.shape
    return (
        total[window : window + h, window : window + w]
        - total[:h, window : window + w]
        - total[window : window + h, :w]
        + total[:h, :w]
    ) / window**2


def water_label(lulc: np.ndarray, window: int) -> np.ndarray:
    """The task label from land cover (H, W): 1 where most of the ``window`` x ``window`` pixels around a pixel are
    open water or flooded vegetation (see the module docstring for why). (H, W) uint8."""
    water = np.isin(lulc, (WATER, FLOODED_VEG))
    if window == 1:
        return water.astype(np.uint8)
    return (box_mean(water, window) > 0.5).astype(np.uint8)


def simulate(rng: np.random.Generator, config: SimConfig | None = None) -> dict[str, np.ndarray]:
    """Simulate one co-registered chip.

    Args:
        rng: the only source of randomness.
        config: world knobs; ``SimConfig()`` by default.

    Returns:
        ``{"S2L2A": (12,H,W) float32 DN, "S1GRD": (2,H,W) float32 dB, "DEM": (1,H,W) float32 m,
        "LULC": (1,H,W) uint8, "NDVI": (1,H,W) float32, "WATER": (1,H,W) uint8}``.
    """
    cfg = config or SimConfig()
    terrain_rng, cover_rng, optics_rng, atmo_rng, radar_rng = _streams(rng, 5)
    dem = _terrain(terrain_rng, cfg.size)
    lulc = _land_cover(cover_rng, dem, cfg)
    parcels = _parcels(cover_rng, cfg.size)
    s2 = _atmosphere(atmo_rng, _reflectance(optics_rng, lulc, dem, parcels), cfg)
    ndvi = (s2[_NIR] - s2[_RED]) / (s2[_NIR] + s2[_RED])
    s1 = _backscatter(radar_rng, lulc, dem, parcels)
    water = water_label(lulc, cfg.label_window)
    return {
        "S2L2A": s2,
        "S1GRD": s1,
        "DEM": np.round(dem)[None].astype(np.float32),
        "LULC": lulc[None],
        "NDVI": ndvi[None].astype(np.float32),
        LABEL: water[None],
    }


def sample(seed: int, index: int, config: SimConfig | None = None) -> dict[str, np.ndarray]:
    """Sample ``index`` of the simulated dataset ``seed`` (independent of every other index)."""
    return simulate(np.random.default_rng([seed, index]), config)


def samples(seed: int, count: int, config: SimConfig | None = None, start: int = 0) -> Iterator[dict]:
    """Samples ``start .. start + count - 1`` of dataset ``seed``."""
    for index in range(start, start + count):
        yield sample(seed, index, config)


# How each simulated array is stored: dtype, following the real samples.
_FILE_DTYPES = {
    "S2L2A": np.int16,
    "S1GRD": np.float32,
    "DEM": np.int16,
    "LULC": np.uint8,
    "NDVI": np.float32,
    LABEL: np.uint8,
}


def _colormap(name: str) -> dict[int, tuple[int, int, int, int]] | None:
    """GeoTIFF colour table of a categorical modality's class map (None for continuous ones and the label)."""
    from terratim.data.geotiff import color_table

    modality = MODALITIES.get(name)
    return color_table(modality.colors) if modality is not None and modality.is_categorical else None


def write_dataset(
    folder: str | os.PathLike,
    count: int,
    seed: int = 0,
    config: SimConfig | None = None,
    modalities: Sequence[str] = (*SIM_MODALITIES, LABEL),
    overwrite: bool = False,
) -> list[str]:
    """Write ``count`` simulated samples as ``<folder>/<MODALITY>/sim<seed>_<index>.tif``.

    The layout is that of ``tests/data/terramesh_examples``. Files carry no CRS (they are nowhere on Earth)
    and a 10 m pixel transform.

    Returns:
        The sample names written.
    """
    from affine import Affine

    from terratim.data.geotiff import write_geotiff

    unknown = [m for m in modalities if m not in _FILE_DTYPES]
    if unknown:
        raise ValueError(f"the simulator has no modality {unknown}; it makes {list(_FILE_DTYPES)}")
    folder = Path(folder)
    profile = {"crs": None, "transform": Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0)}
    names = []
    for index, chip in enumerate(samples(seed, count, config)):
        name = f"sim{seed}_{index:05d}"
        for mod in modalities:
            write_geotiff(
                folder / mod / f"{name}.tif",
                chip[mod].astype(_FILE_DTYPES[mod]),
                like=profile,
                overwrite=overwrite,
                colormap=_colormap(mod),
            )
        names.append(name)
    return names
