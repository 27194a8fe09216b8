"""Where the CNN runs: the torch device and the number of intra-op threads."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "threads_for"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else goes to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"Unknown device {device!r}: use auto, cpu or cuda.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "Device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu."
        )
    return dev


def threads_for(jobs: int) -> int:
    """Torch intra-op threads for ``jobs``: 0 or None is 1, -1 is all cores (joblib's rule)."""
    if jobs is None or jobs == 0:
        return 1
    if jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + jobs)  # joblib convention: -1 = all cores
    return jobs
