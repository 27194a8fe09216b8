"""Every setting of the CNN baseline, in one frozen dataclass.

:class:`CNNSettings` holds the architecture, the input sizes, the augmentation, the
optimisation and the test-time views; it validates itself and round-trips through
JSON. The defaults are the 15-Scene recipe recorded in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["CNNSettings", "TEST_ONLY_SETTINGS"]

#: Settings that change only the evaluation: a finished run can be re-evaluated with
#: other values without retraining.
TEST_ONLY_SETTINGS = frozenset({"test_load_size", "test_sizes", "tta_flip"})


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
