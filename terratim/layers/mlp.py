"""Feed-forward layers: the plain GELU MLP (tiny/small) and the bias-free SwiGLU (base/large)."""

from __future__ import annotations

import torch
import torch.nn as nn

from terratim.layers.linear import Linear, activated, combined


class Mlp(nn.Module):
    """fc2(act(fc1(x))) with exact-erf GELU by default."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.act = act()
        self.fc2 = Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``fc2(act(fc1(x)))``, plus ``residual`` (added inside ``fc2`` where it can be fused)."""
        hidden = self.hidden(x)
        return self.fc2(hidden) if residual is None else combined(self.fc2, hidden, residual)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """act(fc1(x)), the input of ``fc2``."""
        if type(self.act) is nn.GELU and self.act.approximate == "none":
            return activated(self.fc1, x, "gelu")
        return self.act(self.fc1(x))


class SwiGLU(nn.Module):
    """fc2(SiLU(fc1(x)) * fc3(x)), no biases (TerraMind base/large)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.fc2 = Linear(hidden, dim, bias=bias)
        self.fc3 = Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``fc2(SiLU(fc1(x)) * fc3(x))``, plus ``residual`` (added inside ``fc2`` where it can be fused)."""
        hidden = self.hidden(x)
        return self.fc2(hidden) if residual is None else combined(self.fc2, hidden, residual)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(fc1(x)) * fc3(x), the input of ``fc2``."""
        return combined(self.fc3, x, activated(self.fc1, x, "silu"), "mul")  # (..., hidden)
