"""What the CNN writes to disk: the per-epoch training checkpoint and the saved model.

Files in a run's ``out_dir``
----------------------------
``checkpoint.pt``
    Written after every epoch (to a temporary name, then ``os.replace``): weights,
    optimizer state, random-generator states, history and elapsed training time. A
    run started again with the same settings and data resumes after the last
    finished epoch.
``cnn.pt`` and ``cnn.json``
    The trained model: a state dict (loaded with ``torch.load(weights_only=True)``)
    and the settings, classes, input normalisation, metrics and library versions.

Both are read with ``weights_only=True``: loading never runs code from the file.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from bovw.cnn.model import build_model
from bovw.cnn.predict import LoadedCNN
from bovw.cnn.settings import CNNSettings

__all__ = [
    "CHECKPOINT_NAME",
    "WEIGHTS_NAME",
    "META_NAME",
    "FORMAT_VERSION",
    "save_cnn",
    "load_cnn",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_progress",
]

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "cnn.pt"
META_NAME = "cnn.json"
FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    from importlib import metadata

    try:
        bovw_version = metadata.version("bovw")
    except metadata.PackageNotFoundError:
        bovw_version = "unknown"
    return {
        "bovw": bovw_version,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
    }


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- saved model


def save_cnn(model: LoadedCNN, out_dir: str | os.PathLike) -> Path:
    """Write ``cnn.pt`` (state dict) and ``cnn.json`` (settings, classes, metadata).

    Returns
    -------
    Path
        The path of ``cnn.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
    _atomic_torch_save(state, out / WEIGHTS_NAME)
    meta = dict(model.meta)
    meta.update(
        format_version=FORMAT_VERSION,
        kind="bovw-cnn",
        weights=WEIGHTS_NAME,
        settings=model.settings.to_dict(),
        classes=list(model.classes),
        mean=list(model.mean),
        std=list(model.std),
        versions=_versions(),
    )
    _atomic_write_text(out / META_NAME, json.dumps(meta, indent=2) + "\n")
    return out / META_NAME


def load_cnn(path: str | os.PathLike) -> LoadedCNN:
    """Load a model written by :func:`save_cnn` / :func:`train_cnn`.

    Parameters
    ----------
    path : path
        The run folder, its ``cnn.json``, or its ``cnn.pt``.

    Returns
    -------
    LoadedCNN
        In eval mode, on CPU. The weights are read with ``torch.load(weights_only=True)``,
        so loading never runs code from the file.

    Raises
    ------
    FileNotFoundError, ValueError
        With a sentence naming the file, when it is missing or not a bovw CNN.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"No CNN model at {p}: the path does not exist.")
    folder = p if p.is_dir() else p.parent
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(f"No CNN model at {folder}: {META_NAME} is missing.")
    try:
        meta = json.loads(meta_path.read_text())
        settings = CNNSettings.from_dict(meta["settings"]).validate()
        classes = list(meta["classes"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{meta_path} is not a bovw CNN model file ({exc}).") from exc
    weights_path = folder / meta.get("weights", WEIGHTS_NAME)
    if not weights_path.is_file():
        raise FileNotFoundError(f"CNN weights {weights_path} are missing.")
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    net = build_model(settings, len(classes))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights_path} does not match the settings in {meta_path}.") from exc
    net.eval()
    return LoadedCNN(
        model=net,
        settings=settings,
        classes=classes,
        mean=[float(v) for v in meta["mean"]],
        std=[float(v) for v in meta["std"]],
        meta=meta,
    )


# --------------------------------------------------------------------------- training checkpoint


def save_checkpoint(
    path: Path,
    *,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
    history: list[dict[str, Any]],
    train_seconds: float,
    fingerprint: dict[str, Any],
    device: torch.device,
) -> None:
    """Write the state after ``epoch`` finished epochs, atomically, so a run can resume.

    Parameters
    ----------
    path : Path
        The checkpoint file (``out_dir / CHECKPOINT_NAME``).
    net, optimizer, generator
        The network, its optimizer and the generator of batch order and augmentation.
    epoch : int
        Epochs finished.
    history : list of dict
        The per-epoch records so far.
    train_seconds : float
        Training wall time so far.
    fingerprint : dict
        What the run depends on (settings that shape training, data, classes); a
        resumed run must present the same.
    device : torch.device
        The training device; on CUDA its generator state is saved too.
    """
    ckpt = {
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
        "history": json.dumps(history),
        "train_seconds": train_seconds,
        "fingerprint": json.dumps(fingerprint),
    }
    if device.type == "cuda":
        ckpt["cuda_rng"] = torch.cuda.get_rng_state()
    _atomic_torch_save(ckpt, path)


def checkpoint_progress(path: Path) -> tuple[dict[str, Any], int]:
    """The fingerprint a checkpoint was made with and its finished epochs, nothing restored.

    For deciding whether a run can resume before anything is set in place.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return json.loads(ckpt["fingerprint"]), int(ckpt["epoch"])


def load_checkpoint(
    path: Path,
    *,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    fingerprint: dict[str, Any],
    device: torch.device,
) -> tuple[list[dict[str, Any]], float, int]:
    """Restore a checkpoint written by :func:`save_checkpoint` into the given objects.

    The weights, optimizer state and generator states (``generator``, torch's global
    generator and, on CUDA, the device's) are set in place.

    Returns
    -------
    history : list of dict
    train_seconds : float
    epoch : int
        Epochs already finished.

    Raises
    ------
    ValueError
        If the checkpoint was made with another ``fingerprint`` (settings or data).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if json.loads(ckpt["fingerprint"]) != fingerprint:
        raise ValueError(
            f"The checkpoint in {path.parent} was made with other settings or data; "
            "use a new output folder or start afresh without resuming."
        )
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    generator.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in ckpt:
        torch.cuda.set_rng_state(ckpt["cuda_rng"])
    return json.loads(ckpt["history"]), float(ckpt["train_seconds"]), int(ckpt["epoch"])
