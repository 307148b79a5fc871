"""The diffusion decoder of the DiVAE tokenizers: a patched ADM UNet conditioned by concatenation.

TerraTorch counterpart: ``terratorch/models/backbones/terramind/tokenizer/models/unet/unet.py``.

ADM = the "guided diffusion" UNet of Dhariwal & Nichol (2021, arXiv:2105.05233). The image x_t (B, C, H, W) is
cut into 4x4 patches (B, 16C, H/4, W/4), the FSQ codes (B, 5, H/16, W/16) are nearest-upsampled to H/4 x W/4 and
concatenated after the patch channels, and the UNet predicts x_0 in the same patch layout. Module and parameter
names follow the official checkpoints (``time_embed``, ``input_blocks``, ``middle_block``, ``output_blocks``,
``out``; inside blocks ``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``, ``norm``, ``qkv``,
``proj_out``, ``op``, ``conv``).

Speed (same fp32 math up to rounding): activations are kept channels-last; on CPU the 3x3 convolutions on maps of
14 px and more run as Winograd F(4x4, 3x3) or F(2x2, 3x3) (:mod:`terratim.tokenizers.winograd`: 4x and 2.25x
fewer multiplies), with the time-embedding bias and the residual added inside its transforms, which run in
portable eager PyTorch by default, or as compiled kernels when asked for (:mod:`terratim.tokenizers.
winograd_kernels`; building a model never compiles anything); the other convolution weights are reordered into
oneDNN's blocked layout once and cached instead of on every call, through private oneDNN operators that are used
only where a version check and a probe accept them (:func:`onednn_ops_usable`; else the public ``F.conv2d``)
(the Winograd-transformed weights are cached too: 1.4 GB next to the 0.75 GB decoder at 224 px, dropped by
:meth:`DiffusionUNet.release_packed_weights`); SiLU runs in place on the GroupNorm output;
attention uses ``scaled_dot_product_attention`` on (B, 1, T, C) instead of two einsums; the upsampled condition
is computed once per decode and reused by every step (:meth:`DiffusionUNet.prepare_condition`).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from terratim.tokenizers.winograd import Winograd3x3, release_scratch
from terratim.tokenizers.winograd_kernels import load_kernels, loaded_kernels, requested_by_environment


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the patched UNet; the defaults are the released tokenizers'."""

    channels: int = 256
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 3
    attention_ds: tuple[int, ...] = (4, 8)  # downsample factors that get attention (the two lowest levels)
    patch_size: int = 4
    num_groups: int = 32

    @property
    def total_downsample(self) -> int:
        """Image sizes must be multiples of this: patch size x 2^(levels - 1)."""
        return self.patch_size * 2 ** (len(self.channel_mult) - 1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """ADM sinusoid: (N,) timesteps -> (N, dim) = [cos(t w_k) | sin(t w_k)], w_k = max_period^(-k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics and affine math whatever the input dtype (as TerraTorch's ``GroupNorm32``
    in ``terratorch/models/backbones/terramind/tokenizer/models/unet/nn.py`` computes it).

    float32 inputs are normalized as they are. 16-bit inputs are read and written in 16 bits: the kernels
    accumulate in float32, which equals the reference's ``GN(x.float()).to(x.dtype)`` (on CUDA the affine
    parameters are rounded to the input dtype first) without materializing a float32 copy of the activations.
    A float64 module normalizes float64 inputs in float64 (a higher-precision run to compare against).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = cast(torch.Tensor, self.weight), cast(torch.Tensor, self.bias)
        if x.dtype == torch.float64 and weight.dtype == torch.float64:
            pass  # a float64 module runs in float64 throughout
        elif x.dtype != torch.float32 and x.device.type != "cpu":
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        elif x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            x = x.float()
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)


def norm_silu(norm: GroupNorm32, x: torch.Tensor) -> torch.Tensor:
    """SiLU(GN(x)); in place when no gradient is needed (the normalized tensor is fresh)."""
    return F.silu(norm(x), inplace=not torch.is_grad_enabled())


# (smallest H and W, algorithm): measured on a 2-core AVX-512 CPU, F(4x4, 3x3) wins from 28 px, F(2x2, 3x3)
# from 14 px; smaller maps stay with oneDNN's direct convolution
WINOGRAD_BY_SIZE = ((28, Winograd3x3(tile=4)), (14, Winograd3x3(tile=2)))
_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()  # conv -> (key, weight)
# the private oneDNN operators below have had this signature since torch 2.1; older versions use F.conv2d
ONEDNN_OPS_SINCE = (2, 1)
# in-place updates bump a tensor's (private) version counter; without it cached weights could go stale
_HAS_VERSION_COUNTER = hasattr(torch.empty(0), "_version")


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _probe_onednn(ops: Any) -> bool:
    """Whether ``ops`` has the two oneDNN operators, with the signature used here, and they agree with a float64
    ``F.conv2d`` on a small stride-2 convolution."""
    x = torch.linspace(-1, 1, 3 * 6 * 6).reshape(1, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.linspace(-0.5, 0.5, 2 * 3 * 9).reshape(2, 3, 3, 3), torch.tensor([0.25, -0.5])
    try:
        with torch.no_grad():
            packed = ops._reorder_convolution_weight(weight, [1, 1], [2, 2], [1, 1], 1, list(x.shape))
            out = ops._convolution_pointwise(x, packed, bias, [1, 1], [2, 2], [1, 1], 1, "none", [], "")
    except (AttributeError, RuntimeError, TypeError, ValueError, NotImplementedError):
        return False
    expected = F.conv2d(x.double(), weight.double(), bias.double(), stride=2, padding=1)
    return tuple(out.shape) == tuple(expected.shape) and bool(torch.allclose(out.double(), expected, atol=1e-5))


@functools.cache
def onednn_ops_usable() -> bool:
    """Whether :class:`Conv2d` may cache oneDNN-reordered weights through the private operators
    ``torch.ops.mkldnn._reorder_convolution_weight`` and ``_convolution_pointwise``: oneDNN built in, torch at
    least :data:`ONEDNN_OPS_SINCE`, and a probe that calls both and checks the result. Otherwise convolutions
    that do not run as Winograd use the public ``F.conv2d`` (same values; it reorders the weights per call)."""
    if not torch.backends.mkldnn.is_available() or _torch_version() < ONEDNN_OPS_SINCE:
        return False
    return _probe_onednn(torch.ops.mkldnn)


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that, for float32 CPU inference on channels-last inputs, runs 3x3 convolutions on maps of
    14 px and more as Winograd (:data:`WINOGRAD_BY_SIZE`) and the others on oneDNN, with the weights
    transformed (Winograd) or reordered into oneDNN's blocked layout (eager PyTorch reorders them on every call)
    once and cached.

    The cached copy is keyed by the weight's storage and version (and, for oneDNN, the input shape), so loading
    new weights, moving the module or training invalidates it. It holds another copy of the weights in memory;
    call :meth:`DiffusionUNet.release_packed_weights` to drop it. The oneDNN path runs only where
    :func:`onednn_ops_usable` accepts its private operators, else ``F.conv2d``; Winograd runs on public tensor
    operations (or, when :attr:`native`, compiled transforms). All agree up to float32 rounding.
    """

    packing = True
    winograd = True
    native = False  # Winograd transforms as compiled kernels: set by DiffusionUNet.set_optimized once they load
    private_ops = True  # False: never the private oneDNN operators, even where onednn_ops_usable() accepts them

    def _winograd(self, x: torch.Tensor) -> Winograd3x3 | None:
        """The Winograd algorithm for this call (:data:`WINOGRAD_BY_SIZE`), or None for oneDNN / PyTorch."""
        if not (
            self.winograd
            and self.kernel_size == (3, 3)
            and self.stride == (1, 1)
            and self.padding == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self._packable(x)
        ):
            return None
        return next((w for size, w in WINOGRAD_BY_SIZE if min(x.shape[-2:]) >= size), None)

    def _packable(self, x: torch.Tensor) -> bool:
        return (
            self.packing
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not torch.is_grad_enabled()
            and not _cpu_autocast_enabled()
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            and x.is_contiguous(memory_format=torch.channels_last)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fused(x)

    def forward_fused(
        self, x: torch.Tensor, sample_bias: torch.Tensor | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``residual + (conv(x) + sample_bias[:, :, None, None])``; the Winograd path adds both inside its
        transforms, the others add them after the convolution."""
        winograd = self._winograd(x)
        if winograd is not None:
            kernels = loaded_kernels() if self.native else None  # no I/O: loaded by set_optimized
            return winograd(x, self._winograd_weight(winograd), self.bias, sample_bias, residual, kernels=kernels)
        out = self._forward_unfused(x)
        if sample_bias is not None:
            out = out + sample_bias.to(out.dtype)[:, :, None, None]
        return out if residual is None else residual + out

    def norm_silu_forward(
        self,
        norm: GroupNorm32,
        x: torch.Tensor,
        sample_bias: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`forward_fused` of SiLU(norm(x)); the eager Winograd path writes the SiLU straight into its
        padded input buffer instead of padding a copy."""
        winograd = self._winograd(x)
        if winograd is None or self.native:  # compiled transforms read the unpadded SiLU output
            return self.forward_fused(norm_silu(norm, x), sample_bias, residual)
        normed = norm(x)  # (B, C, H, W), channels-last like x
        padded = winograd.padded_input(normed)
        torch.ops.aten.silu.out(normed.permute(0, 2, 3, 1), out=padded[:, 1 : x.shape[2] + 1, 1 : x.shape[3] + 1])
        return winograd(normed, self._winograd_weight(winograd), self.bias, sample_bias, residual, filled=True)

    def _cached_weight(self, layout: tuple, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``make(weight)``, kept until the weight or ``layout`` changes (one entry per module); rebuilt on every
        call where tensors have no version counter to tell in-place updates."""
        if not _HAS_VERSION_COUNTER:
            return make(self.weight.detach())
        key = (layout, self.weight.data_ptr(), self.weight._version)
        cached = _PACKED.get(self)
        if cached is None or cached[0] != key:
            cached = _PACKED[self] = (key, make(self.weight.detach()))
        return cached[1]

    def _winograd_weight(self, winograd: Winograd3x3) -> torch.Tensor:
        return self._cached_weight(("winograd", winograd.tile), winograd.transform_weight)

    def _forward_unfused(self, x: torch.Tensor) -> torch.Tensor:
        if not (self._packable(x) and self.private_ops and onednn_ops_usable()):
            return super().forward(x)  # public F.conv2d
        packed = self._cached_weight(
            ("onednn", *x.shape),
            lambda weight: torch.ops.mkldnn._reorder_convolution_weight(
                weight, list(self.padding), list(self.stride), list(self.dilation), self.groups, list(x.shape)
            ),
        )
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            packed,
            self.bias,
            list(self.padding),
            list(self.stride),
            list(self.dilation),
            self.groups,
            "none",
            [],
            "",
        )


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + Linear(SiLU(emb)); h = conv(SiLU(GN(h))); out = skip(x) + h."""

    def __init__(self, channels: int, out_channels: int, emb_channels: int, groups: int = 32) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(groups, channels), nn.SiLU(), Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(cast(torch.Tensor, self.out_conv.bias))
        self.skip_connection = Conv2d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    @property
    def out_conv(self) -> Conv2d:
        return cast(Conv2d, self.out_layers[3])

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        time_bias = self.emb_layers[1](F.silu(emb))  # (B, C_out)
        in_norm, in_conv = cast(GroupNorm32, self.in_layers[0]), cast(Conv2d, self.in_layers[2])
        h = in_conv.norm_silu_forward(in_norm, x, sample_bias=time_bias)  # (B, C_out, H, W)
        skip = self.skip_connection(x)
        out_norm, dropout = cast(GroupNorm32, self.out_layers[0]), cast(nn.Dropout, self.out_layers[2])
        if dropout.training and dropout.p > 0:
            return self.out_conv.forward_fused(dropout(norm_silu(out_norm, h)), residual=skip)
        return self.out_conv.norm_silu_forward(out_norm, h, residual=skip)


class AttentionBlock(nn.Module):
    """Single-head self-attention over pixels: softmax((q s)^T (k s)) with s = C^(-1/4), legacy qkv order."""

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(cast(torch.Tensor, self.proj_out.bias))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, T, C)
        qkv = F.linear(h, self.qkv.weight[:, :, 0], self.qkv.bias)  # (B, T, 3C) = 1x1 conv
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)  # each (B, 1, T, C); rows [q; k; v] of the conv
        # s^2 = 1/sqrt(C), SDPA's default scale; fused kernels keep the softmax in float32
        h = F.scaled_dot_product_attention(q, k, v)[:, 0]  # (B, T, C)
        h = F.linear(h, self.proj_out.weight[:, :, 0], self.proj_out.bias)
        return x + h.transpose(1, 2).reshape(batch, channels, height, width)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A sequence of blocks that all receive the time embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if not isinstance(layer, nn.Conv2d) else layer(x)
        return x


class DiffusionUNet(nn.Module):
    """x_0 predictor: (x_t (B, C, H, W), t, codes (B, d, H/16, W/16)) -> x_0 (B, C, H, W).

    Args:
        image_channels: C.
        cond_channels: d, the FSQ code channels.
        config: UNet sizes.
    """

    def __init__(self, image_channels: int, cond_channels: int, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.image_channels = image_channels
        p2 = config.patch_size**2
        ch = config.channels
        emb_dim = 4 * ch
        groups = config.num_groups
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(Conv2d(image_channels * p2 + cond_channels, ch, 3, padding=1))]
        )
        skips, ds = [ch], 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mult * config.channels, emb_dim, groups)]
                ch = mult * config.channels
                if ds in config.attention_ds:
                    layers.append(AttentionBlock(ch, groups))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                skips.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(
            ResBlock(ch, ch, emb_dim, groups), AttentionBlock(ch, groups), ResBlock(ch, ch, emb_dim, groups)
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(config.channel_mult))[::-1]:
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mult * config.channels, emb_dim, groups)]
                ch = mult * config.channels
                if ds in config.attention_ds:
                    layers.append(AttentionBlock(ch, groups))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(groups, ch), nn.SiLU(), Conv2d(ch, image_channels * p2, 3, padding=1))
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(cast(torch.Tensor, self.out_conv.bias))
        self.set_optimized(True)

    @property
    def out_conv(self) -> Conv2d:
        return cast(Conv2d, self.out[2])

    def set_optimized(self, enabled: bool = True, winograd: bool = True, native: bool | None = None) -> DiffusionUNet:
        """Choose how the CPU float32 inference path runs; all choices give the same values up to float32
        rounding (Winograd: about twice a direct convolution's rounding error).

        Args:
            enabled: channels-last activations and weights, cached oneDNN weights (where
                :func:`onednn_ops_usable`) and the choices below (default); False: the reference's plain NCHW
                layout and direct convolutions.
            winograd: 3x3 convolutions of 14 px and more as Winograd (:mod:`~terratim.tokenizers.winograd`).
            native: the Winograd transforms as compiled kernels (:mod:`~terratim.tokenizers.winograd_kernels`).
                True builds them now if this machine has none yet (the system C compiler, written into the
                kernel cache); False keeps the portable eager transforms; None (default) follows
                ``TERRATIM_NATIVE_KERNELS=1``, which loads kernels built earlier and never compiles. Where they
                cannot be built or loaded, a warning is logged and the eager transforms run.
        """
        self.optimized = enabled
        use_native = enabled and winograd and self._native_kernels_loaded(native)
        for module in self.modules():
            if isinstance(module, Conv2d):
                module.packing = enabled
                module.winograd = enabled and winograd
                module.native = use_native
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)  # type: ignore[call-overload]  # torch's stub lacks memory_format
        return self.release_packed_weights()

    @staticmethod
    def _native_kernels_loaded(native: bool | None) -> bool:
        """Load (``native=True``: build if needed) the compiled transforms; whether they are now usable."""
        if native is None:
            return requested_by_environment() and load_kernels() is not None
        return native and load_kernels(build=True) is not None

    def release_packed_weights(self) -> DiffusionUNet:
        """Drop the cached oneDNN and Winograd copies of the convolution weights and this thread's Winograd work
        buffers (all rebuilt on the next CPU call)."""
        for module in self.modules():
            _PACKED.pop(module, None)
        release_scratch()
        return self

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C*p*p, H/p, W/p), channel index c*p*p + py*p + px."""
        return F.pixel_unshuffle(x, self.config.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`."""
        return F.pixel_shuffle(x, self.config.patch_size)

    def prepare_condition(self, codes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Codes (B, d, h, w) -> nearest-upsampled (B, d, H/p, W/p), reusable across sampling steps."""
        p = self.config.patch_size
        return F.interpolate(codes, size=(image_size[0] // p, image_size[1] // p), mode="nearest")

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor | int, codes: torch.Tensor, prepared: bool = False
    ) -> torch.Tensor:
        """Predict x_0. ``t`` is a scalar (broadcast over the batch) or (B,); ``prepared`` marks ``codes``
        as already upsampled by :meth:`prepare_condition`."""
        batch = x_t.shape[0]
        cond = codes if prepared else self.prepare_condition(codes, (x_t.shape[-2], x_t.shape[-1]))
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch)
        time_dtype = cast(nn.Linear, self.time_embed[0]).weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.config.channels).to(time_dtype))
        dtype = self.out_conv.weight.dtype  # the module's dtype (autocast still decides the compute dtype)
        h = torch.cat([self.patchify(x_t.to(dtype)), cond.to(dtype)], dim=1)  # (B, 16C + d, H/4, W/4)
        h = h.contiguous(memory_format=torch.channels_last if self.optimized else torch.contiguous_format)
        hs = []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        h = self.out_conv.norm_silu_forward(cast(GroupNorm32, self.out[0]), h)
        return self.unpatchify(h).contiguous()
