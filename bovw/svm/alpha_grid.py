"""The grid of alphas that model selection searches: which end it chose, and a wider grid.

A choice at an end of the grid says that a value past it may score higher still;
the pipeline and ``bovw tune`` warn with :class:`AlphaAtGridEdgeWarning` and
propose the grid one decade wider (``benchmarks/RESULTS.md``, "Validation: the
lower end of the alpha grid").
"""

from __future__ import annotations

import numpy as np

__all__ = ["AlphaAtGridEdgeWarning", "alpha_at_grid_edge", "widened_grid"]


class AlphaAtGridEdgeWarning(UserWarning):
    """Model selection chose the smallest or the largest alpha of its grid: one past it
    may score higher still (CIFAR-10's 50,000 images choose the default grid's smallest)."""


def alpha_at_grid_edge(alpha: float, alphas) -> str | None:
    """``"smallest"`` or ``"largest"`` when ``alpha`` is an end of a grid of 3 or more."""
    grid = sorted(set(map(float, alphas)))
    if len(grid) < 3 or not np.isfinite(alpha) or alpha not in (grid[0], grid[-1]):
        return None
    return "smallest" if alpha == grid[0] else "largest"


def widened_grid(alphas, end: str) -> list[float]:
    """``alphas`` and one value a decade past its ``end`` (``"smallest"`` or ``"largest"``)."""
    grid = sorted(set(map(float, alphas)))
    return sorted([*grid, grid[0] / 10 if end == "smallest" else grid[-1] * 10])
