"""Per-layer summary of a convnet from closed forms: output shape, parameters, FLOPs, receptive field.

Conventions
-----------
Shapes are ``C x H x W`` for one image (no batch axis). A FLOP is one floating-point
multiply or add, so one multiply-accumulate counts 2. The formulas, for a layer with
kernel ``H_K x W_K``, stride ``S``, padding ``P`` and dilation ``D``:

- output size: ``floor((H_in - D (H_K - 1) - 1 + 2P) / S) + 1``, which for ``D = 1`` is
  ``floor((H_in - H_K + 2P) / S) + 1``;
- convolution parameters: ``C_out (C_in H_K W_K / groups + 1)`` (the ``+ 1`` only with
  a bias);
- convolution FLOPs: ``2 C_out H_out W_out C_in H_K W_K / groups`` (the bias add is not
  counted, as in the usual convention);
- linear layer: ``C_out (C_in + 1)`` parameters and ``2 C_in C_out`` FLOPs;
- batch norm: ``2 C`` learned parameters and 2 FLOPs per element (scale and shift;
  zero after :func:`bovw.cnn.model.fuse_bn`); activations 1 FLOP per element;
  pooling one FLOP per input element of each window;
- receptive field (Araujo, Norris & Sim 2019, "Computing receptive fields of
  convolutional neural networks", Distill): ``r_L = 1 + sum_l (K_l - 1) prod_{i<l} S_i``,
  tracked with the "jump" ``j_l = prod_{i<=l} S_i``. Global average pooling sees the
  whole input, and so does every layer after it.

The walk visits the leaf modules in registration order, which is the order of the
forward pass for :class:`~torch.nn.Sequential` models and for
:class:`bovw.cnn.model.SmallCNN`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

__all__ = ["LayerRow", "summarize", "format_summary", "summary_totals"]


@dataclass(frozen=True)
class LayerRow:
    """One row of the summary.

    Attributes
    ----------
    name : str
        Dotted module name, e.g. ``"features.block1.conv"``.
    kind : str
        Module class name, e.g. ``"Conv2d"``.
    output_shape : tuple of int
        ``(C, H, W)`` after a spatial layer, ``(C,)`` after flattening.
    params : int
        Learned parameters of this layer.
    flops : int
        Floating-point operations for one image.
    receptive_field : int
        Side, in input pixels, of the region that one output unit sees.
    jump : int
        Distance in input pixels between adjacent output units (product of strides).
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int
    receptive_field: int
    jump: int


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, tuple):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _out_size(n_in: int, k: int, s: int, p: int, d: int = 1) -> int:
    return math.floor((n_in - d * (k - 1) - 1 + 2 * p) / s) + 1


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Compute the per-layer table for ``model`` on one input of ``input_shape``.

    Parameters
    ----------
    model : torch.nn.Module
        A feed-forward model whose leaf modules run in registration order
        (any :class:`~torch.nn.Sequential`, :class:`bovw.cnn.model.SmallCNN`, or a
        single layer). Supported leaves: ``Conv2d``, ``BatchNorm2d``, ``ReLU``,
        ``LeakyReLU``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten``,
        ``Dropout``, ``Identity``, ``Linear``.
    input_shape : tuple of int
        ``(C, H, W)`` of one image.

    Returns
    -------
    list of LayerRow
        One row per leaf module, in order.

    Raises
    ------
    TypeError
        For a leaf module whose closed form is not known.
    ValueError
        When the shapes do not chain (e.g. wrong input channels, or an input too small).

    Examples
    --------
    >>> from torch import nn
    >>> rows = summarize(nn.Conv2d(8, 16, 5, padding=2), (8, 32, 32))
    >>> rows[0].output_shape, rows[0].params, rows[0].flops
    ((16, 32, 32), 3216, 6553600)
    """
    shape: tuple[int, ...] = tuple(int(v) for v in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}.")
    rf, jump = 1, 1
    rows: list[LayerRow] = []
    leaves = [(n, m) for n, m in model.named_modules() if len(list(m.children())) == 0]
    for name, m in leaves:
        params = sum(p.numel() for p in m.parameters(recurse=False))
        n_elem = math.prod(shape)
        if isinstance(m, nn.Conv2d):
            c, h, w = _spatial(shape, name)
            if c != m.in_channels:
                raise ValueError(f"{name}: expects {m.in_channels} channels, gets {c}.")
            (kh, kw), (sh, sw), (dh, dw) = (
                _pair(m.kernel_size),
                _pair(m.stride),
                _pair(m.dilation),
            )
            if isinstance(m.padding, str):
                raise TypeError(f"{name}: string padding {m.padding!r} is not supported.")
            ph, pw = _pair(m.padding)
            ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
            _check_positive(name, ho, wo)
            flops = 2 * m.out_channels * ho * wo * (m.in_channels // m.groups) * kh * kw
            rf += (dh * (kh - 1)) * jump
            jump *= sh
            shape = (m.out_channels, ho, wo)
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            c, h, w = _spatial(shape, name)
            (kh, kw), (sh, sw), (ph, pw) = (
                _pair(m.kernel_size),
                _pair(m.stride if m.stride is not None else m.kernel_size),
                _pair(m.padding),
            )
            dh = _pair(m.dilation)[0] if isinstance(m, nn.MaxPool2d) else 1
            if getattr(m, "ceil_mode", False):
                raise TypeError(f"{name}: ceil_mode pooling is not supported.")
            ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw)
            _check_positive(name, ho, wo)
            flops = c * ho * wo * kh * kw
            rf += (dh * (kh - 1)) * jump
            jump *= sh
            shape = (c, ho, wo)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            c, h, w = _spatial(shape, name)
            oh, ow = _pair(m.output_size)  # type: ignore[arg-type]
            if (oh, ow) != (1, 1):
                raise TypeError(f"{name}: only global pooling (output size 1) is supported.")
            flops = c * h * w
            rf += (max(h, w) - 1) * jump
            jump *= max(h, w)
            shape = (c, 1, 1)
        elif isinstance(m, nn.BatchNorm2d):
            flops = 2 * n_elem
        elif isinstance(m, nn.ReLU | nn.LeakyReLU):
            flops = n_elem
        elif isinstance(m, nn.Dropout | nn.Identity):
            flops = 0
        elif isinstance(m, nn.Flatten):
            flops = 0
            shape = (n_elem,)
        elif isinstance(m, nn.Linear):
            if shape[-1] != m.in_features:
                raise ValueError(f"{name}: expects {m.in_features} features, gets {shape[-1]}.")
            flops = 2 * m.in_features * m.out_features * (n_elem // m.in_features)
            shape = (*shape[:-1], m.out_features)
        else:
            raise TypeError(f"{name}: no closed form for {type(m).__name__}.")
        rows.append(
            LayerRow(
                name=name or type(m).__name__,
                kind=type(m).__name__,
                output_shape=shape,
                params=int(params),
                flops=int(flops),
                receptive_field=int(rf),
                jump=int(jump),
            )
        )
    return rows


def _spatial(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{name}: needs a C x H x W input, gets shape {shape}.")
    return shape[0], shape[1], shape[2]


def _check_positive(name: str, ho: int, wo: int) -> None:
    if ho < 1 or wo < 1:
        raise ValueError(f"{name}: the input is too small (output would be {ho} x {wo}).")


def summary_totals(rows: list[LayerRow]) -> dict[str, int]:
    """Sum parameters and FLOPs over the rows.

    Returns
    -------
    dict
        ``{"params": ..., "flops": ..., "receptive_field": ...}``, the last being the
        receptive field of the final row.
    """
    return {
        "params": sum(r.params for r in rows),
        "flops": sum(r.flops for r in rows),
        "receptive_field": rows[-1].receptive_field if rows else 1,
    }


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def format_summary(rows: list[LayerRow], input_shape: tuple[int, int, int] | None = None) -> str:
    """Render the rows as a fixed-width text table with a totals line.

    Parameters
    ----------
    rows : list of LayerRow
        From :func:`summarize`.
    input_shape : tuple of int, optional
        Printed in the header when given.

    Returns
    -------
    str
        The table, one layer per line.
    """
    header = ("layer", "type", "output", "params", "FLOPs", "RF")
    body = [
        (
            r.name,
            r.kind,
            " x ".join(str(v) for v in r.output_shape),
            f"{r.params:,}",
            f"{r.flops:,}",
            str(r.receptive_field),
        )
        for r in rows
    ]
    tot = summary_totals(rows)
    footer = ("total", "", "", f"{tot['params']:,}", f"{tot['flops']:,}", "")
    table = [header, *body, footer]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {3, 4, 5}

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(fmt(header))
    lines = []
    if input_shape is not None:
        lines.append("input: " + " x ".join(str(v) for v in input_shape))
    lines += [fmt(header), rule, *(fmt(r) for r in body), rule, fmt(footer)]
    lines.append(
        f"{tot['params']:,} parameters ({_human(tot['params'])}), "
        f"{_human(tot['flops'])}FLOPs per image, receptive field {tot['receptive_field']} px"
    )
    return "\n".join(lines)
