"""Training the small CNN: the loop, the optimizer and the learning-rate schedule.

Conventions
-----------
- The training images are decoded once into memory (:mod:`bovw.cnn.data`), augmented
  per batch (:mod:`bovw.cnn.augment`), and the model is tested with several views
  (:mod:`bovw.cnn.predict`, :mod:`bovw.cnn.evaluate`).
- Optimisation: SGD with Nesterov momentum or AdamW (Loshchilov & Hutter 2019), weight
  decay on weights but not on biases and batch-norm parameters, a linear warm-up
  followed by a cosine decay per step (Loshchilov & Hutter 2017, "SGDR"; Goyal et al.
  2017), and label smoothing (Szegedy et al. 2016).
- Reproducibility: the seed fixes the initial weights, the validation hold-out, the
  batch order, the augmentation and dropout; on CPU two runs with the same settings
  and the same number of threads give the same weights bit for bit.
- With an ``out_dir`` a checkpoint is written after every epoch and a run started
  again resumes after the last finished epoch (:mod:`bovw.cnn.checkpoint`). A run
  may resume to another number of epochs only where the learning rates of the
  finished steps are the same under the new schedule (in practice: within the
  warm-up, with the same warm-up), so that a resumed run is the run it claims to be;
  otherwise it is refused in one sentence that offers a fresh start.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bovw.cnn.augment import random_resized_crop
from bovw.cnn.checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_progress,
    load_checkpoint,
    save_checkpoint,
    save_cnn,
)
from bovw.cnn.data import holdout, load_images, normalize
from bovw.cnn.device import resolve_device, threads_for
from bovw.cnn.evaluate import evaluate_cnn
from bovw.cnn.model import build_model
from bovw.cnn.predict import LoadedCNN, predict_proba
from bovw.cnn.settings import TEST_ONLY_SETTINGS, CNNSettings
from bovw.errors import BadInputError
from bovw.progress import plural

__all__ = ["CNNResult", "train_cnn", "lr_at_step"]


@dataclass
class CNNResult:
    """What :func:`train_cnn` returns.

    Attributes
    ----------
    model : LoadedCNN
        The trained network with its settings and classes.
    metrics : dict
        Test metrics (see :func:`bovw.cnn.evaluate.evaluate_cnn`) plus ``train_seconds`` and
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


def lr_at_step(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate after ``step`` steps: linear warm-up to ``base_lr``, then cosine to 0.

    ``lr = base_lr (step + 1) / warmup_steps`` during the warm-up, then
    ``lr = base_lr / 2 (1 + cos(pi (step - warmup) / (total - warmup)))``.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def make_optimizer(model: nn.Module, s: CNNSettings) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW, with weight decay on the weights only, not biases or BN."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.momentum > 0)
    return torch.optim.AdamW(groups, lr=s.lr, betas=(s.momentum, 0.999))


# --------------------------------------------------------------------------- resume

#: The settings that only set the learning-rate schedule's length: a checkpoint made with
#: other values may still be resumed when the finished steps had the same rates.
SCHEDULE_SETTINGS = frozenset({"epochs", "warmup_epochs"})

_FRESH = "pass --restart to train afresh there (resume=False in Python), or choose another --out"


def _resumable_fingerprint(
    path: Path, fingerprint: dict[str, Any], s: CNNSettings, steps_per_epoch: int
) -> dict[str, Any]:
    """The fingerprint to load the checkpoint at ``path`` with, or BadInputError saying why not.

    The checkpoint's own fingerprint is returned when it equals ``fingerprint``, or
    when only the schedule's length differs and every finished step ran at the rate
    the new schedule gives it: resuming then trains what a fresh run of the new
    length would (a cosine decay over more epochs changes every rate after the
    warm-up, so a finished run can rarely be extended).
    """
    saved, done = checkpoint_progress(path)
    if saved == fingerprint:
        return saved
    old, new = saved.get("settings", {}), fingerprint["settings"]
    changed = sorted(
        k for k in set(old) | set(new) if k not in SCHEDULE_SETTINGS and old.get(k) != new.get(k)
    )
    if any(saved.get(k) != fingerprint[k] for k in ("manifest", "classes")):
        changed.insert(0, "the data")
    if changed or not all(k in old for k in SCHEDULE_SETTINGS):
        raise BadInputError(
            f"The checkpoint in {path.parent} was made with other settings or data "
            f"({', '.join(changed) or 'an older format'}); {_FRESH}."
        )
    if done > s.epochs:
        raise BadInputError(
            f"The CNN in {path.parent} has already trained {plural(done, 'epoch')}, more than "
            f"the {s.epochs} asked; {_FRESH}."
        )
    old_total = steps_per_epoch * int(old["epochs"])
    old_warmup = round(float(old["warmup_epochs"]) * steps_per_epoch)
    new_total = steps_per_epoch * s.epochs
    new_warmup = round(s.warmup_epochs * steps_per_epoch)
    for step in range(done * steps_per_epoch):
        if lr_at_step(step, old_total, old_warmup, s.lr) != lr_at_step(
            step, new_total, new_warmup, s.lr
        ):
            raise BadInputError(
                f"The CNN in {path.parent} has trained {done} of {old['epochs']} epochs on a "
                f"learning-rate schedule made for {old['epochs']}, which {s.epochs} epochs "
                f"would have changed from epoch {step // steps_per_epoch + 1}; {_FRESH}."
            )
    return saved


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
        same settings and data, or with another number of epochs whose schedule gave
        the finished steps the same learning rates; ``False`` starts afresh (the
        command line's ``--restart``). A finished run's checkpoint returns at once
        (only the evaluation is repeated).
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
        For bad settings or an empty training split; :class:`bovw.errors.BadInputError`
        (a ValueError) for a checkpoint that cannot be resumed with these settings
        or data (name a new ``out_dir`` or pass ``resume=False``).
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
    torch.set_num_threads(threads_for(jobs))
    try:
        t_load = time.perf_counter()
        all_labels = np.array([x.label for x in dataset.train], dtype=np.int64)
        val_mask = holdout(all_labels, s.val_fraction, s.seed)
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
        net = build_model(s, len(dataset.classes))
        fmt = torch.channels_last if s.channels_last else torch.contiguous_format
        net = net.to(dev).to(memory_format=fmt)
        opt = make_optimizer(net, s)
        gen = torch.Generator().manual_seed(s.seed)

        n = len(tr_labels)
        bs = min(s.batch_size, n)
        steps_per_epoch = max(1, n // bs)  # drop the ragged last batch (batch norm)
        total_steps = steps_per_epoch * s.epochs
        warmup_steps = round(s.warmup_epochs * steps_per_epoch)

        loaded = LoadedCNN(model=net, settings=s, classes=list(dataset.classes), mean=mean, std=std)
        manifest = str(getattr(dataset, "manifest_hash", ""))
        fingerprint = {
            "settings": {k: v for k, v in s.to_dict().items() if k not in TEST_ONLY_SETTINGS},
            "manifest": manifest,
            "classes": list(dataset.classes),
        }
        history: list[dict[str, Any]] = []
        train_seconds = 0.0
        start_epoch = 0
        ckpt_path = out / CHECKPOINT_NAME if out is not None else None
        if resume and ckpt_path is not None and ckpt_path.is_file():
            history, train_seconds, start_epoch = load_checkpoint(
                ckpt_path,
                net=net,
                optimizer=opt,
                generator=gen,
                fingerprint=_resumable_fingerprint(ckpt_path, fingerprint, s, steps_per_epoch),
                device=dev,
            )

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
                    x = normalize(tr_images_dev[idx], mean_t, std_t)
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
                    p = predict_proba(net, va_images, loaded, dev, 256)
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
                    save_checkpoint(
                        ckpt_path,
                        net=net,
                        optimizer=opt,
                        generator=gen,
                        epoch=epoch + 1,
                        history=history,
                        train_seconds=train_seconds,
                        fingerprint=fingerprint,
                        device=dev,
                    )
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
