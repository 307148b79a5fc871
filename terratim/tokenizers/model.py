"""The FSQ-VAE tokenizers: ViT encoder -> FSQ ids, and back through a diffusion UNet or a ViT decoder.

Every tokenizer speaks the same API (inputs are *standardized* images, see :func:`standardize`):

* ``tok.latents(x)`` -> (B, d, h, w) encoder output before quantization;
* ``tok.encode(x)`` -> ``(codes, ids)``: FSQ codes in [0, 1] (B, d, h, w) and ids (B, h, w) int64;
* ``tok.decode_tokens(ids, image_size=None, timesteps=10, noise=None, generator=None)`` -> image;
* ``tok.denoise(x_t, t, codes)`` -> predicted x_0 (diffusion tokenizers only);
* ``tok(x, timesteps=10)`` -> full reconstruction.

A tokenizer is built with its decoder (``decoder=True``, the default) or without it (``decoder=False``): code
that only encodes (token inputs of a backbone, pretraining targets) need not allocate it (the UNet has 196M
parameters, 0.75 GB in float32). Decoding a tokenizer built without its decoder raises an error that says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from terratim.modalities import FILL_METHODS, Modality, check_fill_method, resolve, warn_filled_bands
from terratim.tokenizers.ddim import DDIMSampler
from terratim.tokenizers.fsq import FSQ
from terratim.tokenizers.unet import DiffusionUNet, UNetConfig
from terratim.tokenizers.vit import ViTDecoder, ViTEncoder
from terratim.tokenizers.winograd import release_scratch

DEFAULT_STEPS = 10  # the reference's examples; 50 is its library default and what parity uses


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of one tokenizer; saved as JSON next to converted weights.

    The defaults are the released v1 tokenizers; tests use smaller widths and depths.
    """

    modality: str
    in_channels: int
    fsq_levels: tuple[int, ...]
    decoder: Literal["diffusion", "vit"] = "diffusion"
    num_classes: int = 0  # > 0: inputs are class ids, one-hot encoded inside; the decoder returns logits
    patch_size: int = 16
    pos_grid: int = 16  # the stored sin-cos table is for 16 x 16 patches (256 px)
    enc_dim: int = 768
    enc_depth: int = 12
    enc_heads: int = 12
    dec_dim: int = 768
    dec_depth: int = 12
    dec_heads: int = 12
    unet: UNetConfig = field(default_factory=UNetConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown tokenizer config fields {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        unet = {k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("unet", {}).items()}
        data["fsq_levels"] = tuple(data["fsq_levels"])
        return cls(**data, unet=UNetConfig(**unet))  # type: ignore[arg-type]  # values checked by the dataclasses

    @classmethod
    def for_modality(cls, name: str, **overrides: Any) -> TokenizerConfig:
        """The released architecture for a modality, with optional overrides (e.g. smaller sizes)."""
        modality = resolve(name)
        if not modality.fsq_levels:
            raise ValueError(f"{modality.name} has no image tokenizer")
        if modality.is_categorical:  # class ids in (one-hot inside), class logits out
            classes = len(modality.classes)
            base = cls(modality.name, classes, modality.fsq_levels, decoder="vit", num_classes=classes)
        else:
            base = cls(modality.name, modality.num_bands, modality.fsq_levels)
        return cls.from_dict({**base.to_dict(), **overrides})


def standardize(modality: str | Modality, x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per band with the registry's pretraining statistics (the modality record's mean / std)."""
    return (resolve(modality) if isinstance(modality, str) else modality).standardize(x)


def destandardize(modality: str | Modality, z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`standardize`."""
    return (resolve(modality) if isinstance(modality, str) else modality).destandardize(z)


class FSQTokenizer(nn.Module):
    """Encoder, ``quant_proj`` and FSQ shared by all tokenizers; subclasses add the decoder side.

    Args:
        config: the architecture.
        decoder: build the decoder side (``decoder`` and, for class maps, ``post_quant_proj``); ``False`` gives an
            encode-only tokenizer whose decoder parameters are never allocated.
    """

    decoder_parts: tuple[str, ...] = ("decoder",)  # submodules (and checkpoint key prefixes) of the decoder side
    decoder: nn.Module | None

    def __init__(self, config: TokenizerConfig, decoder: bool = True) -> None:
        super().__init__()
        self.config = config
        self.modality = resolve(config.modality)
        self.encoder = ViTEncoder(
            config.in_channels,
            config.enc_dim,
            config.enc_depth,
            config.enc_heads,
            config.patch_size,
            config.pos_grid,
        )
        self.quant_proj = nn.Conv2d(config.enc_dim, len(config.fsq_levels), 1)
        self.quantizer = FSQ(config.fsq_levels)
        parts = self.make_decoder_side() if decoder else dict.fromkeys(self.decoder_parts)
        for name, module in parts.items():
            self.register_module(name, module)  # None: the part is absent (state_dict and parameters skip it)
        self.given_bands: tuple[str, ...] | None = None  # set by fill_missing_bands: the bands inputs hold

    def check_fillable(self) -> None:
        """Raise unless this tokenizer's inputs have bands that can be filled (raw images, not class maps)."""
        if self.modality.is_categorical or self.modality.kind != "image":
            raise ValueError(f"{self.modality.name} tokenizer: bands can only be filled for raw image modalities")

    def fill_missing_bands(self, bands: Sequence[str], method: str = "mean") -> FSQTokenizer:
        """Accept inputs holding only ``bands`` (in that order): the absent pretrained bands are filled with their
        pretraining mean (0 in standardized units) before encoding, with a warning naming them (results degrade).
        """
        self.check_fillable()
        if check_fill_method(method) is None:
            raise ValueError(f"fill_missing_bands needs a method, one of {list(FILL_METHODS)}")
        warn_filled_bands(self.modality.name, self.modality.missing_bands(bands))  # also checks the names
        self.given_bands = tuple(bands)
        return self

    # -- decoder side, built or not at construction ---------------------------------------------------
    def make_decoder(self) -> nn.Module:
        raise NotImplementedError

    def make_decoder_side(self) -> dict[str, nn.Module]:
        """The modules named in ``decoder_parts``, freshly initialised, in construction order."""
        return {"decoder": self.make_decoder()}

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    def is_decoder_key(self, key: str) -> bool:
        """Whether a state-dict key belongs to the decoder side."""
        return key.split(".", 1)[0] in self.decoder_parts

    def require_decoder(self) -> nn.Module:
        """The decoder, or a clear error for a tokenizer built encode-only."""
        if self.decoder is None:
            name = self.modality.name
            raise RuntimeError(
                f"this {name} tokenizer was built without its decoder (decoder=False), so it can encode but not "
                f"decode; build it with decoder=True, e.g. "
                f"terratim.build('terramind_v1_tokenizer_{name.lower()}', pretrained=True, decoder=True)"
            )
        return self.decoder

    # -- encoding -------------------------------------------------------------------------------------
    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Check an input image and return it as (B, C, H, W) in the encoder's dtype (class ids one-hot)."""
        name, cfg = self.modality.name, self.config
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} tokenizer: expected a torch.Tensor, got {type(x).__name__}")
        if cfg.num_classes:
            x = self._one_hot(x)
        elif not x.dtype.is_floating_point:
            raise TypeError(f"{name} tokenizer: expected a floating-point (standardized) image, got {x.dtype}")
        elif self.given_bands is not None:
            x = self.modality.fill_bands(x, self.given_bands, standardized=True)  # (B, C, H, W)
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"{name} tokenizer: expected an image (B, {cfg.in_channels}, H, W) with bands "
                f"{list(self.modality.bands)}, got shape {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if height % cfg.patch_size or width % cfg.patch_size or height == 0 or width == 0:
            raise ValueError(
                f"{name} tokenizer: image size {height}x{width} is not a multiple of the patch size "
                f"{cfg.patch_size}; crop or pad it"
            )
        return x.to(self.quant_proj.weight.dtype)

    def _one_hot(self, x: torch.Tensor) -> torch.Tensor:
        classes = self.config.num_classes
        if x.dim() == 4 and x.shape[1] == classes and x.dtype.is_floating_point:
            return x  # already one-hot (or soft) class maps
        if x.dim() == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 3:
            raise ValueError(
                f"{self.modality.name} tokenizer: expected class ids (B, H, W) or (B, 1, H, W), or one-hot "
                f"(B, {classes}, H, W); got shape {tuple(x.shape)}"
            )
        if x.dtype.is_floating_point and not bool((x == x.round()).all()):
            raise ValueError(f"{self.modality.name} tokenizer: class ids must be whole numbers")
        ids = x.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= classes):
            raise ValueError(
                f"{self.modality.name} tokenizer: class ids must lie in [0, {classes}), "
                f"got [{int(ids.min())}, {int(ids.max())}]"
            )
        return F.one_hot(ids, classes).permute(0, 3, 1, 2).float()  # (B, classes, H, W)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized image -> pre-quantization latents (B, d, H/16, W/16)."""
        return self.quant_proj(self.encoder(self.prepare_input(x)).to(self.quant_proj.weight.dtype))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized image -> (FSQ codes (B, d, h, w) in [0, 1], ids (B, h, w) int64)."""
        return self.quantizer(self.latents(x))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's block outputs as (B, D, h, w) maps (the last includes the post-MLP)."""
        return self.encoder(self.prepare_input(x), return_intermediates=True)

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (B, h, w) -> codes (B, d, h, w) on this tokenizer's device."""
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"{self.modality.name} tokenizer: token ids must be a torch.Tensor")
        self.quantizer.check_ids(ids, f"{self.modality.name} token ids")
        if ids.dim() != 3:
            raise ValueError(f"{self.modality.name} token ids must have shape (B, h, w), got {tuple(ids.shape)}")
        return self.quantizer.ids_to_codes(ids.to(self.quant_proj.weight.device))

    def decode_tokens(
        self, ids: torch.Tensor, image_size: int | tuple[int, int] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Token ids (B, h, w) -> decoded image; see :meth:`decode_codes` for the options."""
        return self.decode_codes(self.codes_from_ids(ids), image_size=image_size, **kwargs)

    def decode_codes(self, codes: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def _image_size(self, codes: torch.Tensor, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
        if image_size is None:
            return codes.shape[-2] * self.config.patch_size, codes.shape[-1] * self.config.patch_size
        if isinstance(image_size, int):
            return image_size, image_size
        return int(image_size[0]), int(image_size[1])

    def extra_repr(self) -> str:
        return f"modality={self.modality.name}, decoder={self.has_decoder}"


class DiffusionTokenizer(FSQTokenizer):
    """DiVAE: FSQ codes condition a patched UNet that predicts x_0; decoding is DDIM sampling.

    The image tokenizers of TerraMind (arXiv 2504.11171); TerraTorch's
    ``terratorch/models/backbones/terramind/tokenizer/vqvae.py``, class ``DiVAE`` (after arXiv 2206.00386).
    """

    def make_decoder(self) -> DiffusionUNet:
        return DiffusionUNet(self.config.in_channels, len(self.config.fsq_levels), self.config.unet)

    def require_decoder(self) -> DiffusionUNet:
        return cast(DiffusionUNet, super().require_decoder())

    def denoise(self, x_t: torch.Tensor, t: int | torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """One denoiser call: predicted x_0 for x_t (B, C, H, W) at timestep t given codes (B, d, h, w)."""
        self._check_size((x_t.shape[-2], x_t.shape[-1]))
        return self.require_decoder()(x_t, t, codes)

    def _check_size(self, size: tuple[int, int]) -> None:
        multiple = self.config.unet.total_downsample
        if size[0] % multiple or size[1] % multiple or min(size) <= 0:
            raise ValueError(
                f"{self.modality.name} diffusion decoder: image size {size[0]}x{size[1]} must be a positive "
                f"multiple of {multiple} (4x4 patches, then {len(self.config.unet.channel_mult) - 1} halvings)"
            )

    def initial_noise(
        self, shape: tuple[int, ...], noise: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """x_T: the given ``noise`` (wins), else N(0, I) drawn from ``generator`` on its own device."""
        device = self.quant_proj.weight.device
        if noise is not None:
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(
                    f"{self.modality.name}: starting noise must have shape {shape}, got {tuple(noise.shape)}"
                )
            return noise.to(device=device, dtype=torch.float32)
        draw_on = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(shape, generator=generator, device=draw_on).to(device)

    @torch.no_grad()
    def decode_codes(  # type: ignore[override]  # the diffusion decoder's own sampling options
        self,
        codes: torch.Tensor,
        image_size: int | tuple[int, int] | None = None,
        timesteps: int = DEFAULT_STEPS,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        clip: bool = True,
    ) -> torch.Tensor:
        """Codes (B, d, h, w) -> image (B, C, H, W) in standardized units, by DDIM sampling.

        Args:
            codes: FSQ codes in [0, 1].
            image_size: output size (default 16h x 16w); a multiple of 32.
            timesteps: DDIM steps (10 as in the reference's examples; 50 is its library default).
            noise: starting noise x_T (B, C, H, W); takes precedence over ``generator``.
            generator: source of the starting noise when ``noise`` is None.
            clip: clip each predicted x_0 to [-1, 1] as the reference does, which bounds every output value to
                mean +- 1 std after de-standardization; ``False`` keeps the decoder's full range.
        """
        size = self._image_size(codes, image_size)
        self._check_size(size)
        decoder = self.require_decoder()
        x_T = self.initial_noise((codes.shape[0], self.config.in_channels, *size), noise, generator)
        cond = decoder.prepare_condition(codes.to(x_T.device).float(), size)
        sampler = DDIMSampler(clip=clip)
        try:
            return sampler.sample(lambda x, t: decoder(x, t, cond, prepared=True), x_T, timesteps)
        finally:
            release_scratch()  # the Winograd work buffers live for one decode

    def forward(
        self,
        x: torch.Tensor,
        timesteps: int = DEFAULT_STEPS,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        clip: bool = True,
    ) -> torch.Tensor:
        """Reconstruction: encode, then decode the codes at the input's size."""
        codes, _ = self.encode(x)
        return self.decode_codes(
            codes,
            image_size=(x.shape[-2], x.shape[-1]),
            timesteps=timesteps,
            noise=noise,
            generator=generator,
            clip=clip,
        )


class ClassTokenizer(FSQTokenizer):
    """VQVAE for class maps (LULC): codes -> ``post_quant_proj`` -> ViT decoder -> class logits.

    TerraTorch ``terratorch/models/backbones/terramind/tokenizer/vqvae.py``, ``VQVAE``; both ``post_quant_proj``
    and the decoder are the decoder side.
    """

    decoder_parts = ("post_quant_proj", "decoder")
    post_quant_proj: nn.Conv2d | None

    def make_decoder(self) -> ViTDecoder:
        cfg = self.config
        return ViTDecoder(cfg.num_classes, cfg.dec_dim, cfg.dec_depth, cfg.dec_heads, cfg.patch_size, cfg.pos_grid)

    def make_decoder_side(self) -> dict[str, nn.Module]:
        post_quant_proj = nn.Conv2d(len(self.config.fsq_levels), self.config.dec_dim, 1)  # created first, as before
        return {"post_quant_proj": post_quant_proj, "decoder": self.make_decoder()}

    def decode_codes(
        self, codes: torch.Tensor, image_size: int | tuple[int, int] | None = None, **ignored: Any
    ) -> torch.Tensor:
        """Codes (B, d, h, w) -> class logits (B, classes, 16h, 16w). Sampling options are accepted and unused."""
        size = self._image_size(codes, image_size)
        native = (codes.shape[-2] * self.config.patch_size, codes.shape[-1] * self.config.patch_size)
        if size != native:
            raise ValueError(
                f"{self.modality.name}: the ViT decoder outputs {native[0]}x{native[1]} for "
                f"{codes.shape[-2]}x{codes.shape[-1]} tokens, not {size[0]}x{size[1]}"
            )
        decoder, post_quant_proj = self.require_decoder(), self.post_quant_proj
        assert post_quant_proj is not None  # built with the decoder
        return decoder(post_quant_proj(codes.to(post_quant_proj.weight)))

    def forward(self, x: torch.Tensor, **ignored: Any) -> torch.Tensor:
        """Reconstruction logits (B, classes, H, W)."""
        codes, _ = self.encode(x)
        return self.decode_codes(codes)

    def denoise(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise TypeError(f"the {self.modality.name} tokenizer decodes with a ViT, it has no diffusion denoiser")


def make_tokenizer(config: TokenizerConfig, decoder: bool = True) -> FSQTokenizer:
    """A freshly initialised tokenizer of the class for a config, with or without its decoder side."""
    cls = ClassTokenizer if config.decoder == "vit" else DiffusionTokenizer
    return cls(config, decoder=decoder)
