"""Training, evaluation, checkpoints and saved models for the small CNN.

Conventions
-----------
- Images are decoded once with :func:`bovw.data.read_image` and resized (cv2
  ``INTER_AREA``, the whole image squashed to a square, no crop) to
  ``train_size`` (training) or ``test_load_size`` (testing) pixels a side; they stay
  in memory as one ``uint8`` tensor ``N x C x S x S`` (C = 1 for gray, 3 for BGR).
  15-Scene at 112 px is about 19 MB for the training split.
- Training augments each batch on the fly with torch ops: a random resized crop
  (Szegedy et al. 2015, "Going deeper with convolutions": area fraction uniform in
  ``crop_scale``, log aspect ratio uniform in ``crop_ratio``) resampled bilinearly to
  ``image_size x image_size``, and a horizontal flip with probability 1/2, both in one
  ``affine_grid``/``grid_sample`` call.
- Testing feeds the whole image, resampled bilinearly (antialiased) from
  ``test_load_size`` to each side in ``test_sizes``; the softmax outputs of these
  views (and of their mirror images, with ``tta_flip``) are averaged. Random crops
  enlarge objects, so testing at a larger side than the training crop matches the
  apparent object sizes ("FixRes", Touvron et al. 2019, "Fixing the train-test
  resolution discrepancy"), and the bilinear resampling gives test images the
  slight softness of the resampled training crops (on 15-Scene this was worth
  about 3 points of mean per-class accuracy over feeding ``INTER_AREA``-resized
  images directly). Global average pooling lets the network take any size.
- Optimisation: SGD with Nesterov momentum or AdamW (Loshchilov & Hutter 2019), weight
  decay on weights but not on biases and batch-norm parameters, a linear warm-up
  followed by a cosine decay per step (Loshchilov & Hutter 2017, "SGDR"; Goyal et al.
  2017), and label smoothing (Szegedy et al. 2016).
- Reproducibility: the seed fixes the initial weights, the validation hold-out, the
  batch order, the augmentation and dropout; on CPU two runs with the same settings
  and the same number of threads give the same weights bit for bit.

Files in ``out_dir``
--------------------
``checkpoint.pt``
    Written after every epoch (to a temporary name, then ``os.replace``): weights,
    optimizer state, random-generator states, history and elapsed training time. A
    run started again with the same settings and data resumes after the last
    finished epoch.
``cnn.pt`` and ``cnn.json``
    The trained model: a state dict (loaded with ``torch.load(weights_only=True)``)
    and the settings, classes, input normalisation, metrics and library versions.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bovw.cnn.model import SmallCNN, fuse_bn
from bovw.cnn.summary import summarize, summary_totals

__all__ = [
    "CNNSettings",
    "CNNResult",
    "LoadedCNN",
    "train_cnn",
    "evaluate_cnn",
    "load_cnn",
    "save_cnn",
    "load_images",
    "random_resized_crop",
    "lr_at_step",
    "resolve_device",
]

CHECKPOINT_NAME = "checkpoint.pt"
#: Settings that change only the evaluation: a finished run can be re-evaluated with
#: other values without retraining.
_TEST_ONLY = frozenset({"test_load_size", "test_sizes", "tta_flip"})
WEIGHTS_NAME = "cnn.pt"
META_NAME = "cnn.json"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CNNSettings:
    """Every setting of the CNN baseline: architecture, input, optimisation, evaluation.

    The defaults are the 15-Scene recipe recorded in ``benchmarks/RESULTS.md``; use
    :meth:`small_data` for a quick run on the demo data.

    Parameters
    ----------
    widths : tuple of int
        Output channels of the conv blocks; the depth is their number.
    dropout : float
        Dropout probability before the classifier, in [0, 1).
    leaky_relu : float
        Negative slope of the activation; 0 gives ReLU.
    color : {"gray", "bgr"}
        How images are decoded (1 or 3 input channels).
    image_size : int
        Side of the square training crops, in pixels.
    train_size : int
        Side to which every training image is resized once; crops are cut from it.
    test_load_size : int
        Side to which every test image is resized once (``INTER_AREA``).
    test_sizes : tuple of int
        Sides of the test views, resampled bilinearly from ``test_load_size``; their
        softmax outputs are averaged.
    crop_scale : tuple of float
        Range of the area fraction of the random resized crop.
    crop_ratio : tuple of float
        Range of the aspect ratio (width / height) of the crop.
    hflip : bool
        Mirror training images with probability 1/2.
    tta_flip : bool
        At test time average the softmax of each image and its mirror image.
    epochs : int
        Passes over the training images.
    batch_size : int
        Images per step.
    optimizer : {"sgd", "adamw"}
        SGD with Nesterov momentum, or AdamW.
    lr : float
        Peak learning rate, reached after the warm-up.
    momentum : float
        SGD momentum (or AdamW's beta1).
    weight_decay : float
        Weight decay of the conv and linear weights.
    warmup_epochs : float
        Epochs of linear warm-up before the cosine decay.
    label_smoothing : float
        Label-smoothing factor in [0, 1).
    val_fraction : float
        Fraction of each class's training images held out to report a validation
        accuracy after every epoch (0 trains on all of them and reports none). The
        held-out images are not trained on.
    channels_last : bool
        Use the NHWC memory format (faster convolutions on CPU with oneDNN).
    seed : int
        Seed for weights, hold-out, batch order, augmentation and dropout.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: float = 0.3
    leaky_relu: float = 0.0
    color: str = "gray"
    image_size: int = 96
    train_size: int = 112
    test_load_size: int = 144
    test_sizes: tuple[int, ...] = (96, 112, 128)
    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    tta_flip: bool = True
    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    val_fraction: float = 0.0
    channels_last: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        # Accept lists (from JSON or TOML) and store tuples, so settings stay hashable.
        for name in ("widths", "crop_scale", "crop_ratio", "test_sizes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def small_data(cls, **overrides: Any) -> CNNSettings:
        """Settings for a few hundred images (the demo data): about a minute on 2 cores.

        Same network and recipe at lower resolution (64 px crops from 72 px images,
        tested at 80 px), with smaller batches.
        """
        base = dict(
            image_size=64,
            train_size=72,
            test_load_size=96,
            test_sizes=(80,),
            epochs=60,
            batch_size=32,
            lr=0.05,
        )
        base.update(overrides)
        return cls(**base)

    def with_image_size(self, image_size: int) -> CNNSettings:
        """A copy whose training crops are ``image_size`` px, other sides scaled alike.

        ``train_size``, ``test_load_size`` and ``test_sizes`` keep their ratios to
        ``image_size`` (for the defaults, 96 -> 112, 144 and 96/112/128 px).
        """
        r = image_size / self.image_size
        return dataclasses.replace(
            self,
            image_size=int(image_size),
            train_size=round(self.train_size * r),
            test_load_size=round(self.test_load_size * r),
            test_sizes=tuple(round(v * r) for v in self.test_sizes),
        )

    @classmethod
    def for_dataset(cls, n_train: int, **overrides: Any) -> CNNSettings:
        """:meth:`small_data` below 1,000 training images, else the defaults; then ``overrides``.

        This is what ``bovw compare`` and ``bovw run --cnn`` use unless settings are given.
        """
        if n_train < 1000:
            return cls.small_data(**overrides)
        return cls(**overrides)

    def validate(self) -> CNNSettings:
        """Check every setting; raise ValueError with one sentence naming a bad one.

        Returns
        -------
        CNNSettings
            ``self``, so that ``CNNSettings(...).validate()`` chains.
        """

        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"CNN setting {name}={getattr(self, name)!r} is invalid: {why}.")

        if (
            not isinstance(self.widths, tuple)
            or len(self.widths) == 0
            or not all(isinstance(w, int) and w > 0 for w in self.widths)
        ):
            raise bad("widths", "it must be a non-empty list of positive integers")
        if not 0 <= self.dropout < 1:
            raise bad("dropout", "it must be in [0, 1)")
        if not 0 <= self.leaky_relu < 1:
            raise bad("leaky_relu", "the negative slope must be in [0, 1)")
        if self.color not in ("gray", "bgr"):
            raise bad("color", 'use "gray" or "bgr"')
        smallest = 2 ** len(self.widths)
        for name in ("image_size", "train_size", "test_load_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < smallest:
                raise bad(name, f"{len(self.widths)} pooling blocks need at least {smallest} px")
        if (
            not isinstance(self.test_sizes, tuple)
            or len(self.test_sizes) == 0
            or not all(isinstance(v, int) and v >= smallest for v in self.test_sizes)
        ):
            raise bad("test_sizes", f"give one or more sides of at least {smallest} px")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise bad("crop_scale", "it must be (min, max) with 0 < min <= max <= 1")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise bad("crop_ratio", "it must be (min, max) with 0 < min <= max")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", "it must be a positive integer")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise bad("batch_size", "batch norm needs at least 2 images per batch")
        if self.optimizer not in ("sgd", "adamw"):
            raise bad("optimizer", 'use "sgd" or "adamw"')
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "the learning rate must be a positive number")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "it must be in [0, 1)")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", "it must be non-negative")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise bad("warmup_epochs", "it must be non-negative and less than epochs")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "it must be in [0, 1)")
        if not 0 <= self.val_fraction < 1:
            raise bad("val_fraction", "it must be in [0, 1)")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "it must be a non-negative integer")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CNNSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown CNN setting(s): {', '.join(unknown)}.")
        return cls(**data)

    @property
    def in_channels(self) -> int:
        """Input channels implied by ``color``."""
        return 1 if self.color == "gray" else 3


# --------------------------------------------------------------------------- results


@dataclass
class LoadedCNN:
    """A trained CNN ready for inference.

    Attributes
    ----------
    model : torch.nn.Module
        The network, in eval mode (batch norm not folded; see :func:`bovw.cnn.fuse_bn`).
    settings : CNNSettings
        The settings it was trained with.
    classes : list of str
        Class names, indexed by label.
    mean, std : list of float
        Per-channel normalisation of the ``[0, 1]`` pixel values.
    meta : dict
        Everything else stored in ``cnn.json`` (metrics, versions, dataset hash).
    """

    model: nn.Module
    settings: CNNSettings
    classes: list[str]
    mean: list[float]
    std: list[float]
    meta: dict[str, Any] = field(default_factory=dict)

    def predict_proba(
        self,
        images: torch.Tensor,
        *,
        batch_size: int = 128,
        device: str = "auto",
        fused: bool = True,
    ) -> np.ndarray:
        """Class probabilities for a ``uint8`` tensor ``N x C x S x S`` (see :func:`load_images`)."""
        dev = resolve_device(device)
        net = fuse_bn(self.model) if fused else self.model
        return _predict_proba(net.to(dev).eval(), images, self, dev, batch_size)

    def predict_paths(self, paths: Sequence[str | os.PathLike], **kwargs: Any) -> np.ndarray:
        """Predicted labels (int) for image files."""
        images = load_images(paths, self.settings.test_load_size, self.settings.color)
        return self.predict_proba(images, **kwargs).argmax(1)


@dataclass
class CNNResult:
    """What :func:`train_cnn` returns.

    Attributes
    ----------
    model : LoadedCNN
        The trained network with its settings and classes.
    metrics : dict
        Test metrics (see :func:`evaluate_cnn`) plus ``train_seconds`` and
        ``load_seconds``; empty when ``evaluate=False``.
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``train_accuracy``, ``val_accuracy`` (or None),
        ``lr``, ``seconds``.
    train_seconds : float
        Wall time of the training loop (summed over resumed sessions).
    out_dir : Path or None
        Where checkpoint and model were written.
    resumed_from_epoch : int
        Epochs already done when this call started (0 for a fresh run).
    """

    model: LoadedCNN
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    train_seconds: float
    out_dir: Path | None
    resumed_from_epoch: int = 0


# --------------------------------------------------------------------------- helpers


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


def _threads_for(jobs: int) -> int:
    if jobs is None or jobs == 0:
        return 1
    if jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + jobs)  # joblib convention: -1 = all cores
    return jobs


def load_images(paths: Sequence[str | os.PathLike], size: int, color: str = "gray") -> torch.Tensor:
    """Decode and resize images once into one ``uint8`` tensor.

    Parameters
    ----------
    paths : sequence of path
        Image files (decoded with :func:`bovw.data.read_image`).
    size : int
        Side of the square output; the whole image is resized (cv2 ``INTER_AREA``).
    color : {"gray", "bgr"}
        Decoding mode.

    Returns
    -------
    torch.Tensor
        ``uint8``, shape ``(N, C, size, size)`` with C = 1 (gray) or 3 (BGR).
    """
    from bovw.data import read_image

    c = 1 if color == "gray" else 3
    out = np.empty((len(paths), c, size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        img = read_image(p, color=color)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float().div_(255.0) - mean) / std


def random_resized_crop(
    x: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
) -> torch.Tensor:
    """Random resized crop and horizontal flip of a batch, in one bilinear resampling.

    For each image an area fraction ``a ~ U(scale)`` and a log aspect ratio
    ``log r ~ U(log ratio)`` give a crop of relative width ``sqrt(a r)`` and height
    ``sqrt(a / r)`` (clipped to 1), placed uniformly inside the image; with ``hflip``
    the crop is mirrored with probability 1/2. The crops are sampled with
    ``affine_grid``/``grid_sample`` (``align_corners=False``).

    Parameters
    ----------
    x : torch.Tensor
        Float batch ``(N, C, H, W)``.
    out_size : int
        Side of the square output crops.
    generator : torch.Generator
        CPU generator for the random parameters (reproducible).
    scale, ratio : tuple of float
        Ranges of area fraction and aspect ratio.
    hflip : bool
        Whether to mirror half of the crops.

    Returns
    -------
    torch.Tensor
        ``(N, C, out_size, out_size)`` on the device of ``x``.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> random_resized_crop(torch.rand(4, 1, 80, 80), 64, g).shape
    torch.Size([4, 1, 64, 64])
    """
    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    sw = torch.sqrt(area * r).clamp(max=1.0)
    sh = torch.sqrt(area / r).clamp(max=1.0)
    tx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sw)
    ty = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sh)
    flip = torch.rand(n, generator=generator) < 0.5
    sign = torch.where(flip & hflip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sw * sign
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = ty
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def lr_at_step(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate after ``step`` steps: linear warm-up to ``base_lr``, then cosine to 0.

    ``lr = base_lr (step + 1) / warmup_steps`` during the warm-up, then
    ``lr = base_lr / 2 (1 + cos(pi (step - warmup) / (total - warmup)))``.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def _build_model(settings: CNNSettings, num_classes: int) -> SmallCNN:
    return SmallCNN(
        in_channels=settings.in_channels,
        num_classes=num_classes,
        widths=settings.widths,
        dropout=settings.dropout,
        leaky_relu=settings.leaky_relu,
    )


def _make_optimizer(model: nn.Module, s: CNNSettings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.momentum > 0)
    return torch.optim.AdamW(groups, lr=s.lr, betas=(s.momentum, 0.999))


def _holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified validation hold-out (at least one per class of >= 2)."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        if k > 0:
            mask[rng.permutation(idx)[:k]] = True
    return mask


def _predict_proba(
    net: nn.Module,
    images: torch.Tensor,
    model: LoadedCNN,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    s = model.settings
    mean = torch.tensor(model.mean, device=device).reshape(1, -1, 1, 1)
    std = torch.tensor(model.std, device=device).reshape(1, -1, 1, 1)
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].to(device)
            p = None
            for size in s.test_sizes:
                x = batch.float()
                if x.shape[-2:] != (size, size):
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
                x = _normalize(x, mean, std).contiguous(memory_format=fmt)
                q = net(x).softmax(1)
                if s.tta_flip:
                    q = q + net(x.flip(3)).softmax(1)
                p = q if p is None else p + q
            assert p is not None
            out.append((p / _n_views(s)).float().cpu())
    if not out:
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    return torch.cat(out).numpy()


def _n_views(s: CNNSettings) -> int:
    return len(s.test_sizes) * (2 if s.tta_flip else 1)


def _model_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


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


# --------------------------------------------------------------------------- save / load


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
    net = _build_model(settings, len(classes))
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


# --------------------------------------------------------------------------- evaluate


def evaluate_cnn(
    model: LoadedCNN | str | os.PathLike,
    dataset: Any = None,
    *,
    split: str = "test",
    images: torch.Tensor | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    jobs: int = 1,
    device: str = "auto",
    batch_size: int = 128,
    fused: bool = True,
    time_unfused: bool = False,
) -> dict[str, Any]:
    """Test metrics and costs of a trained CNN.

    Parameters
    ----------
    model : LoadedCNN or path
        A model, or a run folder / ``cnn.json`` to load.
    dataset : bovw.data.Dataset, optional
        Its ``split`` samples are decoded and classified. The classes must match the
        model's. Alternatively pass ``images`` and ``labels``.
    split : {"test", "train"}
        Which samples of ``dataset``.
    images : torch.Tensor, optional
        ``uint8`` ``(N, C, S, S)`` from :func:`load_images`.
    labels : array of int, optional
        True labels for ``images``.
    jobs : int
        Torch threads (-1: all cores).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    batch_size : int
        Images per forward pass.
    fused : bool
        Run the batch-norm-folded network (:func:`bovw.cnn.fuse_bn`); same predictions.
    time_unfused : bool
        Also time the unfused network, for the fusion speed-up.

    Returns
    -------
    dict
        ``accuracy``, ``mean_class_accuracy``, ``per_class_accuracy``,
        ``confusion_matrix``, ``n_test`` (as :func:`bovw.report.classification_metrics`),
        and ``predict_seconds``, ``inference_images_per_second`` (decoded images in
        memory, all test-time views included), ``parameters``, ``model_bytes`` (the
        serialized state dict), ``flops_per_image`` (closed form, fused network at
        each of ``test_sizes``, doubled with ``tta_flip``), ``test_views``, ``device``; with
        ``time_unfused`` also ``unfused_images_per_second`` and ``fusion_speedup``;
        and ``y_true``/``y_pred`` lists.
    """
    from bovw.report import classification_metrics

    loaded = model if isinstance(model, LoadedCNN) else load_cnn(model)
    s = loaded.settings
    if images is None:
        if dataset is None:
            raise ValueError("evaluate_cnn needs a dataset or images and labels.")
        if list(dataset.classes) != list(loaded.classes):
            raise ValueError(
                "The dataset's classes do not match the model's "
                f"({len(dataset.classes)} vs {len(loaded.classes)} classes); "
                "evaluate on data with the same class folders."
            )
        samples = getattr(dataset, split)
        images = load_images([x.path for x in samples], s.test_load_size, s.color)
        labels = [x.label for x in samples]
    if labels is None:
        raise ValueError("evaluate_cnn needs labels with images.")
    y_true = np.asarray(labels, dtype=np.int64)
    dev = resolve_device(device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(_threads_for(jobs))
    try:
        fmt = torch.channels_last if s.channels_last else torch.contiguous_format
        net = (fuse_bn(loaded.model) if fused else loaded.model).to(dev).eval()
        net = net.to(memory_format=fmt)
        _predict_proba(
            net, images[: min(len(images), batch_size)], loaded, dev, batch_size
        )  # warm-up
        t0 = time.perf_counter()
        proba = _predict_proba(net, images, loaded, dev, batch_size)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        extra: dict[str, Any] = {}
        if time_unfused:
            plain = loaded.model.to(dev).eval().to(memory_format=fmt)
            t0 = time.perf_counter()
            _predict_proba(plain, images, loaded, dev, batch_size)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            unfused = time.perf_counter() - t0
            extra["unfused_images_per_second"] = len(images) / max(unfused, 1e-9)
            extra["fusion_speedup"] = unfused / max(seconds, 1e-9)
    finally:
        torch.set_num_threads(old_threads)
    y_pred = proba.argmax(1) if len(proba) else np.zeros(0, dtype=np.int64)
    metrics = classification_metrics(y_true, y_pred, loaded.classes)
    fused_net = fuse_bn(loaded.model)
    flops = sum(
        summary_totals(summarize(fused_net, (s.in_channels, size, size)))["flops"]
        for size in s.test_sizes
    ) * (2 if s.tta_flip else 1)
    metrics.update(
        predict_seconds=seconds,
        inference_images_per_second=len(images) / max(seconds, 1e-9),
        parameters=int(sum(p.numel() for p in loaded.model.parameters())),
        model_bytes=_model_bytes(loaded.model),
        flops_per_image=int(flops),
        test_views=_n_views(s),
        device=str(dev),
        **extra,
        y_true=y_true.tolist(),
        y_pred=[int(v) for v in y_pred],
    )
    return metrics


# --------------------------------------------------------------------------- train


def train_cnn(
    dataset: Any,
    settings: CNNSettings | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    jobs: int = 1,
    device: str = "auto",
    progress: bool = True,
    resume: bool = True,
    evaluate: bool = True,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> CNNResult:
    """Train the CNN on ``dataset.train`` and evaluate it once on ``dataset.test``.

    Parameters
    ----------
    dataset : bovw.data.Dataset
        From :func:`bovw.data.load_dataset` (same split protocol as BoVW).
    settings : CNNSettings, optional
        Defaults to ``CNNSettings()``; validated first.
    out_dir : path, optional
        Folder for ``checkpoint.pt`` (every epoch), ``cnn.pt`` and ``cnn.json``. Without
        it nothing is written and nothing can be resumed.
    jobs : int
        Torch intra-op threads (-1: all cores); restored when training returns.
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    progress : bool
        Show a tqdm bar over epochs with the loss and validation accuracy.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it exists and was made with the
        same settings and data; otherwise start afresh. A finished run's checkpoint
        returns at once (only the evaluation is repeated).
    evaluate : bool
        Evaluate on the test split at the end (the only time the test split is used).
    on_epoch_end : callable, optional
        Called with each epoch's history record after its checkpoint is written.

    Returns
    -------
    CNNResult

    Raises
    ------
    ValueError
        For bad settings, an empty training split, or a checkpoint made with other
        settings or data (name a new ``out_dir`` or pass ``resume=False``).
    """
    from tqdm.auto import tqdm

    s = (settings or CNNSettings()).validate()
    if not dataset.train:
        raise ValueError("The training split is empty; the CNN needs training images.")
    dev = resolve_device(device)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(_threads_for(jobs))
    try:
        t_load = time.perf_counter()
        all_labels = np.array([x.label for x in dataset.train], dtype=np.int64)
        val_mask = _holdout(all_labels, s.val_fraction, s.seed)
        paths = [x.path for x in dataset.train]
        tr_images = load_images(
            [p for p, v in zip(paths, val_mask, strict=True) if not v], s.train_size, s.color
        )
        tr_labels = torch.from_numpy(all_labels[~val_mask])
        va_images = load_images(
            [p for p, v in zip(paths, val_mask, strict=True) if v], s.test_load_size, s.color
        )
        va_labels = all_labels[val_mask]
        load_seconds = time.perf_counter() - t_load

        # Normalisation from the training images (per channel, in [0, 1] units).
        flat = tr_images.float().div(255.0).transpose(0, 1).reshape(tr_images.shape[1], -1)
        mean = flat.mean(1).tolist()
        std = flat.std(1).clamp(min=1e-3).tolist()
        del flat

        torch.manual_seed(s.seed)
        net = _build_model(s, len(dataset.classes))
        fmt = torch.channels_last if s.channels_last else torch.contiguous_format
        net = net.to(dev).to(memory_format=fmt)
        opt = _make_optimizer(net, s)
        gen = torch.Generator().manual_seed(s.seed)

        n = len(tr_labels)
        bs = min(s.batch_size, n)
        steps_per_epoch = max(1, n // bs)  # drop the ragged last batch (batch norm)
        total_steps = steps_per_epoch * s.epochs
        warmup_steps = round(s.warmup_epochs * steps_per_epoch)

        loaded = LoadedCNN(model=net, settings=s, classes=list(dataset.classes), mean=mean, std=std)
        manifest = str(getattr(dataset, "manifest_hash", ""))
        fingerprint = {
            "settings": {k: v for k, v in s.to_dict().items() if k not in _TEST_ONLY},
            "manifest": manifest,
            "classes": list(dataset.classes),
        }
        history: list[dict[str, Any]] = []
        train_seconds = 0.0
        start_epoch = 0
        ckpt_path = out / CHECKPOINT_NAME if out is not None else None
        if resume and ckpt_path is not None and ckpt_path.is_file():
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            if json.loads(ckpt["fingerprint"]) != fingerprint:
                raise ValueError(
                    f"The checkpoint in {out} was made with other settings or data; "
                    "use a new output folder or start afresh without resuming."
                )
            net.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            if dev.type == "cuda" and "cuda_rng" in ckpt:
                torch.cuda.set_rng_state(ckpt["cuda_rng"])
            history = json.loads(ckpt["history"])
            train_seconds = float(ckpt["train_seconds"])
            start_epoch = int(ckpt["epoch"])

        mean_t = torch.tensor(mean, device=dev).reshape(1, -1, 1, 1)
        std_t = torch.tensor(std, device=dev).reshape(1, -1, 1, 1)
        tr_images_dev = tr_images.to(dev)
        tr_labels_dev = tr_labels.to(dev)

        bar = tqdm(
            total=s.epochs,
            initial=start_epoch,
            desc="cnn train",
            unit="epoch",
            disable=not progress,
            dynamic_ncols=True,
        )
        try:
            for epoch in range(start_epoch, s.epochs):
                t_epoch = time.perf_counter()
                net.train()
                perm = torch.randperm(n, generator=gen)
                loss_sum, correct, seen = 0.0, 0, 0
                lr = s.lr
                for i in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + i
                    lr = lr_at_step(step, total_steps, warmup_steps, s.lr)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    idx = perm[i * bs : (i + 1) * bs].to(dev)
                    x = _normalize(tr_images_dev[idx], mean_t, std_t)
                    x = random_resized_crop(
                        x, s.image_size, gen, s.crop_scale, s.crop_ratio, s.hflip
                    ).contiguous(memory_format=fmt)
                    y = tr_labels_dev[idx]
                    logits = net(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += float(loss.detach()) * len(y)
                    correct += int((logits.detach().argmax(1) == y).sum())
                    seen += len(y)
                if not math.isfinite(loss_sum):
                    raise FloatingPointError(
                        f"The training loss became {loss_sum} in epoch {epoch + 1}; "
                        "lower the learning rate (setting lr)."
                    )
                val_acc = None
                if len(va_labels):
                    net.eval()
                    p = _predict_proba(net, va_images, loaded, dev, 256)
                    val_acc = float((p.argmax(1) == va_labels).mean())
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t_epoch
                train_seconds += seconds
                record = {
                    "epoch": epoch + 1,
                    "loss": loss_sum / seen,
                    "train_accuracy": correct / seen,
                    "val_accuracy": val_acc,
                    "lr": lr,
                    "seconds": seconds,
                }
                history.append(record)
                if ckpt_path is not None:
                    ckpt = {
                        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                        "optimizer": opt.state_dict(),
                        "generator": gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "epoch": epoch + 1,
                        "history": json.dumps(history),
                        "train_seconds": train_seconds,
                        "fingerprint": json.dumps(fingerprint),
                    }
                    if dev.type == "cuda":
                        ckpt["cuda_rng"] = torch.cuda.get_rng_state()
                    _atomic_torch_save(ckpt, ckpt_path)
                postfix = {
                    "loss": f"{record['loss']:.3f}",
                    "train": f"{record['train_accuracy']:.3f}",
                }
                if val_acc is not None:
                    postfix["val"] = f"{val_acc:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if on_epoch_end is not None:
                    on_epoch_end(record)
        finally:
            bar.close()

        net.eval()
        net = net.to(memory_format=torch.contiguous_format)
        loaded.model = net.cpu()
        loaded.meta = {
            "dataset": {"root": str(getattr(dataset, "root", "")), "manifest_hash": manifest},
            "history": history,
            "train_seconds": train_seconds,
            "n_train": int(n),
            "n_val": int(len(va_labels)),
        }
        metrics: dict[str, Any] = {}
        if evaluate and dataset.test:
            metrics = evaluate_cnn(loaded, dataset, split="test", jobs=jobs, device=device)
        metrics["train_seconds"] = train_seconds
        metrics["load_seconds"] = load_seconds
        if out is not None:
            loaded.meta["metrics"] = {
                k: v for k, v in metrics.items() if k not in ("y_true", "y_pred")
            }
            save_cnn(loaded, out)
        return CNNResult(
            model=loaded,
            metrics=metrics,
            history=history,
            train_seconds=train_seconds,
            out_dir=out,
            resumed_from_epoch=start_epoch,
        )
    finally:
        torch.set_num_threads(old_threads)
