"""Feed-forward layers: the plain GELU MLP (tiny/small) and the bias-free SwiGLU (base/large)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mlp(nn.Module):
    """fc2(act(fc1(x))) with exact-erf GELU by default."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden(x))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """act(fc1(x)), the input of ``fc2``."""
        return self.act(self.fc1(x))


class SwiGLU(nn.Module):
    """fc2(SiLU(fc1(x)) * fc3(x)), no biases (TerraMind base/large)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.fc3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden(x))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(fc1(x)) * fc3(x), the input of ``fc2``."""
        return F.silu(self.fc1(x)) * self.fc3(x)
