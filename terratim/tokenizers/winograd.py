"""Winograd convolution F(m x m, 3 x 3) for float32 CPU inference of the diffusion decoder's 3x3 convolutions.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016, arXiv:1509.09308), eq. (8): each m x m
output tile is Y = A^T [(G g G^T) (.) (B^T d B)] A, with d the (m + 2)^2 input tile under it, g the 3x3 kernel and
(.) an elementwise product that, summed over input channels, becomes (m + 2)^2 independent matrix products. With
m = 4 an output tile costs 36 multiplies per channel pair instead of 16 x 9 = 144: 4x fewer than a direct
convolution (m = 2: 16 instead of 36). The matrices come from Toom-Cook interpolation at the points 0, 1, -1, 2,
-1/2 and infinity (:func:`toom_cook_matrices`), which round about half as much as the textbook 0, +-1, +-2; the
kernel transform G g G^T is computed once per weight, in float64.

Layout (B = batch, th x tw tiles, T = B th tw): the input is written into a zero-bordered buffer; the overlapping
tiles are gathered as (a, a, T, C_in) and transformed by two small products (rows, then columns); then a^2 batched
products (T, C_in) @ (C_in, C_out); then the output transform, again rows then columns, and a scatter of the tiles
that also adds the residual, all with public tensor operations (the decoder's default on CPU). When asked for
(:mod:`terratim.tokenizers.winograd_kernels`, opt-in), each side's transforms run instead as one compiled kernel
(one pass over memory each). Large maps run in bands of tile rows. The result equals ``F.conv2d(x, weight, bias,
padding=1)`` up to float32 rounding (a different order of sums), like any convolution algorithm; tests bound the
difference against a float64 convolution.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from terratim.tokenizers.winograd_kernels import WinogradKernels

POINTS = (0, 1, -1, 2, Fraction(-1, 2))  # finite interpolation points for m = 4 (plus infinity)
KERNEL = 3


def _poly_mul(a: list[Fraction], b: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def toom_cook_matrices(tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`toom_cook_fractions` as float64 CPU tensors (A^T, G, B^T)."""
    return tuple(  # type: ignore[return-value]
        torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64, device="cpu")
        for rows in toom_cook_fractions(tile)
    )


def toom_cook_fractions(tile: int) -> tuple[list[list[Fraction]], list[list[Fraction]], list[list[Fraction]]]:
    """Exact F(tile, 3) matrices (A^T (m x a), G (a x 3), B^T (a x a)), a = tile + 2, as fractions.

    Correlation is the transpose of polynomial multiplication s = g * x: evaluate both at a - 1 points and at
    infinity (the leading coefficient), multiply, interpolate. A^T is the evaluation of x, G the evaluation of g
    divided by the Lagrange denominators f_j = prod_{l != j}(p_j - p_l), and row j of B^T holds the coefficients
    of prod_{l != j}(x - p_l) (row infinity: of prod_l (x - p_l)).
    """
    alpha = tile + KERNEL - 1
    points = [Fraction(p) for p in POINTS[: alpha - 1]]
    if len(points) != alpha - 1:
        raise ValueError(f"tile {tile} needs {alpha - 1} interpolation points, have {len(POINTS)}")
    a_t = [[p**i for p in points] + [Fraction(int(i == tile - 1))] for i in range(tile)]
    g = []
    for j, p in enumerate(points):
        denominator = Fraction(1)
        for q in points[:j] + points[j + 1 :]:
            denominator *= p - q
        g.append([p**k / denominator for k in range(KERNEL)])
    g.append([Fraction(int(k == KERNEL - 1)) for k in range(KERNEL)])
    b_t = []
    for j in range(alpha):
        poly = [Fraction(1)]
        for q in points[:j] + points[j + 1 :] if j < alpha - 1 else points:
            poly = _poly_mul(poly, [-q, Fraction(1)])
        b_t.append(poly + [Fraction(0)] * (alpha - len(poly)))
    return a_t, g, b_t


class Winograd3x3:
    """F(tile x tile, 3 x 3) convolution with stride 1 and zero padding 1 (the decoder's 3x3 convolutions)."""

    max_band_bytes = 64 << 20  # largest transformed input per band of tile rows

    def __init__(self, tile: int = 4) -> None:
        self.tile = tile
        self.alpha = tile + KERNEL - 1
        a_t, g, b_t = toom_cook_matrices(tile)
        self.kernel_transform = g  # (a, 3) float64
        self.input_transform = b_t.float()  # (a, a)
        self.output_transform = a_t.float()  # (m, a)
        # A^T's column for the point 1 is all ones, so a value added to M at (1, 1) reaches every output pixel
        # of the tile exactly once: biases are added there, on 1/a^2 of the products
        self.bias_slot = POINTS.index(1) * (self.alpha + 1)
        assert bool((a_t[:, POINTS.index(1)] == 1).all())

    def transform_weight(self, weight: torch.Tensor, chunk: int = 1 << 14) -> torch.Tensor:
        """Kernel (C_out, C_in, 3, 3) -> U = G g G^T as (a^2, C_in, C_out), computed in float64 and rounded once.

        vec(G g G^T) = (G (x) G) vec(g): one matrix product, run over ``chunk`` kernels at a time so that the
        float64 intermediate stays in cache."""
        out_channels, in_channels = weight.shape[:2]
        kron = torch.kron(self.kernel_transform, self.kernel_transform).to(weight.device)  # (a^2, 9)
        kernels = weight.detach().permute(2, 3, 1, 0).reshape(KERNEL * KERNEL, -1)  # (9, C_in C_out)
        u = torch.empty(self.alpha**2, kernels.shape[1], dtype=weight.dtype, device=weight.device)
        for start in range(0, kernels.shape[1], chunk):
            u[:, start : start + chunk] = kron @ kernels[:, start : start + chunk].double()
        return u.view(self.alpha**2, in_channels, out_channels)

    def padded_input(self, x: torch.Tensor) -> torch.Tensor:
        """The zero-bordered work buffer (B, m th + 2, m tw + 2, C) for a (B, C, H, W) input ``x``; the input
        goes into its interior ``[:, 1 : H + 1, 1 : W + 1]`` (channels last)."""
        height, width = x.shape[-2:]
        padded = self._padded_buffer(x)
        # zero padding 1 on top/left, and at least 1 on bottom/right so that the last tile is complete
        for border in (padded[:, :1], padded[:, height + 1 :], padded[:, :, :1], padded[:, :, width + 1 :]):
            border.zero_()
        return padded

    def _padded_buffer(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        m = self.tile
        return _SCRATCH.get(x, "padded", (batch, m * -(-height // m) + 2, m * -(-width // m) + 2, channels))

    def __call__(
        self,
        x: torch.Tensor,
        weight_u: torch.Tensor,
        bias: torch.Tensor | None,
        sample_bias: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
        filled: bool = False,
        kernels: WinogradKernels | None = None,
    ) -> torch.Tensor:
        """Channels-last (B, C_in, H, W) -> channels-last (B, C_out, H, W), weights from :meth:`transform_weight`.

        Returns ``residual + (conv(x) + bias + sample_bias[:, :, None, None])``: the per-sample bias (B, C_out)
        and the channels-last residual (B, C_out, H, W) are added inside the transforms, saving a pass each.
        ``kernels`` (:func:`~terratim.tokenizers.winograd_kernels.load_kernels`) runs the transforms as
        compiled kernels, one pass each; otherwise they run in eager PyTorch, where ``filled=True`` says the
        caller already wrote the input into :meth:`padded_input`'s interior (saving the copy) and ``x`` then
        only gives the shape.
        """
        batch, channels, height, width = x.shape
        m = self.tile
        tiles_h, tiles_w = -(-height // m), -(-width // m)
        out_channels = weight_u.shape[-1]
        bias_total = sample_bias if bias is None else bias if sample_bias is None else bias + sample_bias
        # bands of tile rows bound the work buffers on large maps (one band at 224 px)
        per_row = self.alpha**2 * batch * tiles_w * max(channels, out_channels) * x.element_size()
        band = max(1, min(tiles_h, self.max_band_bytes // per_row))
        bands = [slice(first, min(first + band, tiles_h)) for first in range(0, tiles_h, band)]
        if kernels is not None:
            return self._compiled(kernels, x, weight_u, bias_total, residual, bands)
        padded = self._padded_buffer(x) if filled else self.padded_input(x)
        if not filled:
            padded[:, 1 : height + 1, 1 : width + 1].copy_(x.permute(0, 2, 3, 1))
        out = torch.empty(batch, tiles_h, m, tiles_w, m, out_channels, dtype=x.dtype, device=x.device)
        exact_tiles = height == m * tiles_h and width == m * tiles_w
        residual_tiles = None
        if residual is not None and exact_tiles:
            residual_tiles = residual.permute(0, 2, 3, 1).view(out.shape)
        for rows in bands:
            self._band(
                padded,
                rows,
                weight_u,
                bias_total,
                out[:, rows],
                None if residual_tiles is None else residual_tiles[:, rows],
            )
        out = out.view(batch, m * tiles_h, m * tiles_w, out_channels)[:, :height, :width].permute(0, 3, 1, 2)
        out = out.contiguous(memory_format=torch.channels_last)  # copies only when H or W is not a multiple of m
        return residual + out if residual is not None and residual_tiles is None else out

    def _compiled(
        self,
        kernels: WinogradKernels,
        x: torch.Tensor,
        weight_u: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None,
        bands: list[slice],
    ) -> torch.Tensor:
        """:meth:`__call__` with the transforms as compiled kernels: per band of tile rows, input transform into
        (T, a^2, C_in), channel products, output transform with bias and residual straight into the output."""
        batch, channels, height, width = x.shape
        out_channels = weight_u.shape[-1]
        out = torch.empty(batch, height, width, out_channels, dtype=x.dtype, device=x.device)  # channels-last
        if bias is not None:
            bias = bias.to(x.dtype).expand(batch, out_channels).contiguous()
        if residual is not None:
            residual = residual.permute(0, 2, 3, 1).contiguous()  # a view when channels-last already
        tiles_w = -(-width // self.tile)
        for rows in bands:
            tiles = batch * (rows.stop - rows.start) * tiles_w
            v = _SCRATCH.get(x, "tiles", (tiles, self.alpha**2, channels))
            kernels.input(x.permute(0, 2, 3, 1).contiguous(), self.tile, rows, v)  # a view when channels-last
            prod = torch.bmm(  # (a^2, T, C_out); bmm reads the tile-major v at no extra cost
                v.transpose(0, 1), weight_u, out=_SCRATCH.get(x, "prod", (self.alpha**2, tiles, out_channels))
            )
            kernels.output(prod, self.tile, rows, bias, residual, out)
        return out.permute(0, 3, 1, 2)

    def _band(
        self,
        padded: torch.Tensor,
        rows: slice,
        weight_u: torch.Tensor,
        bias: torch.Tensor | None,
        out: torch.Tensor,
        residual: torch.Tensor | None,
    ) -> None:
        """Tile rows ``rows`` of the convolution of ``padded`` (B, H', W', C_in), written into ``out``
        (B, rows, m, tw, m, C_out), plus ``residual`` of the same shape when given."""
        m, alpha = self.tile, self.alpha
        batch, band, _, tiles_w, _, out_channels = out.shape
        channels = padded.shape[-1]
        tiles = batch * band * tiles_w
        scratch = _SCRATCH.get
        b_t, a_t = self.input_transform.to(padded.device), self.output_transform.to(padded.device)
        sb, sy, sx, sc = padded.stride()
        d = scratch(padded, "tiles", (alpha, alpha, batch, band, tiles_w, channels))
        d.copy_(
            padded[:, m * rows.start :].as_strided(  # d[i, j, b, t, s, c] = padded[b, m t + i, m s + j, c]
                d.shape, (sy, sx, sb, m * sy, m * sx, sc), padded.storage_offset() + m * rows.start * sy
            )
        )
        rows_t = torch.mm(b_t, d.view(alpha, -1), out=scratch(padded, "rows", (alpha, d.numel() // alpha)))  # B^T d
        v = torch.matmul(  # (a, a, T C_in) = B^T d B: matmul broadcasts over the first axis
            b_t, rows_t.view(alpha, alpha, -1), out=scratch(padded, "v", (alpha, alpha, tiles * channels))
        )
        prod = torch.bmm(  # (a^2, T, C_out)
            v.view(alpha * alpha, tiles, channels),
            weight_u,
            out=scratch(padded, "prod", (alpha**2, tiles, out_channels)),
        )
        if bias is not None:
            prod[self.bias_slot].view(batch, band * tiles_w, out_channels).add_(bias.view(-1, 1, out_channels))
        y = torch.mm(a_t, prod.view(alpha, -1), out=scratch(padded, "y_rows", (m, prod.numel() // alpha)))  # A^T M
        y = torch.matmul(a_t, y.view(m, alpha, -1), out=scratch(padded, "y", (m, m, tiles * out_channels)))
        y = y.view(m, m, batch, band, tiles_w, out_channels).permute(2, 3, 0, 4, 1, 5)  # A^T M A: (B, t, m, s, m, C)
        if residual is not None:
            torch.add(residual, y, out=out)
        else:
            out.copy_(y)


class _Scratch(threading.local):
    """Work buffers reused by every Winograd call, one set per thread: fresh multi-MB tensors on every call cost
    page faults that took up to a third of a convolution's time. Each (role, device, dtype) keeps one flat buffer
    that grows to the largest size asked for (about 100 MB for one 224 px image with the released decoder; bands
    of tile rows cap the transform buffers at 64 MB each on larger inputs); buffers
    made under ``torch.inference_mode`` are kept apart, since they cannot be written outside it."""

    def __init__(self) -> None:
        self.flat: dict[tuple, torch.Tensor] = {}

    def get(self, like: torch.Tensor, role: str, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialized contiguous tensor of ``shape``; valid until the next request for ``role``."""
        # tensors made under inference_mode cannot be written outside it (and the other way round needs none)
        numel, key = math.prod(shape), (role, like.device, like.dtype, torch.is_inference_mode_enabled())
        flat = self.flat.get(key)
        if flat is None or flat.numel() < numel:
            flat = self.flat[key] = torch.empty(numel, device=like.device, dtype=like.dtype)
        return flat[:numel].view(shape)


_SCRATCH = _Scratch()


def release_scratch() -> None:
    """Free this thread's Winograd work buffers (they are rebuilt on the next call)."""
    _SCRATCH.flat.clear()
