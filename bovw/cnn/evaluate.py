"""Test metrics and costs of a trained CNN: accuracy, speed, parameters, size, FLOPs."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from bovw.cnn.checkpoint import load_cnn
from bovw.cnn.data import load_images
from bovw.cnn.device import resolve_device, threads_for
from bovw.cnn.model import fuse_bn
from bovw.cnn.predict import LoadedCNN, n_views, predict_proba
from bovw.cnn.summary import summarize, summary_totals

__all__ = ["evaluate_cnn"]


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
    progress: bool = False,
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
        ``uint8`` ``(N, C, S, S)`` from :func:`bovw.cnn.data.load_images`.
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
    progress : bool
        Show a progress bar while the test images are decoded.

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
        images = load_images(
            [x.path for x in samples],
            s.test_load_size,
            s.color,
            progress=progress,
            desc=f"cnn evaluate: decoding {split} images",
        )
        labels = [x.label for x in samples]
    if labels is None:
        raise ValueError("evaluate_cnn needs labels with images.")
    y_true = np.asarray(labels, dtype=np.int64)
    dev = resolve_device(device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads_for(jobs))
    try:
        fmt = torch.channels_last if s.channels_last else torch.contiguous_format
        net = (fuse_bn(loaded.model) if fused else loaded.model).to(dev).eval()
        net = net.to(memory_format=fmt)
        predict_proba(
            net, images[: min(len(images), batch_size)], loaded, dev, batch_size
        )  # warm-up
        t0 = time.perf_counter()
        proba = predict_proba(net, images, loaded, dev, batch_size)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        extra: dict[str, Any] = {}
        if time_unfused:
            plain = loaded.model.to(dev).eval().to(memory_format=fmt)
            t0 = time.perf_counter()
            predict_proba(plain, images, loaded, dev, batch_size)
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
        test_views=n_views(s),
        device=str(dev),
        **extra,
        y_true=y_true.tolist(),
        y_pred=[int(v) for v in y_pred],
    )
    return metrics


def _model_bytes(model: nn.Module) -> int:
    """Size of the serialized state dict, in bytes."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
