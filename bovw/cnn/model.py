"""The small convnet used as the learned-representation baseline, and batch-norm folding.

Conventions
-----------
Tensors are ``N x C x H x W`` (batch, channels, rows, columns); ``x`` is the column
axis. Images enter as float32 standardized gray or BGR values, see
:func:`bovw.cnn.data.normalize`.

The network follows the classic pattern (Simonyan & Zisserman 2015, with batch
normalization from Ioffe & Szegedy 2015)::

    [conv 3x3 (pad 1, no bias) -> batch norm -> ReLU (or Leaky ReLU) -> max pool 2x2, stride 2] x len(widths)
    -> global average pooling -> dropout -> linear

Global average pooling (Lin, Chen & Yan 2014) makes the network accept any input
size whose sides are at least ``2 ** len(widths)`` pixels, so it can be trained on
small random crops and tested on the whole, slightly larger image ("FixRes",
Touvron et al. 2019).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from bovw.cnn.settings import CNNSettings

__all__ = ["SmallCNN", "build_model", "fuse_bn", "fuse_conv_bn"]


class SmallCNN(nn.Module):
    """A VGG-style convnet: blocks of conv3x3-BN-ReLU-maxpool, global pooling, linear.

    Parameters
    ----------
    in_channels : int
        Channels of the input images (1 for gray, 3 for BGR).
    num_classes : int
        Number of output logits.
    widths : sequence of int
        Output channels of each block; the depth is ``len(widths)``.
    dropout : float
        Dropout probability before the linear classifier.
    leaky_relu : float
        Negative slope of the activation; 0 gives a plain ReLU.

    Shape
    -----
    - Input: ``(N, in_channels, H, W)`` with ``H, W >= 2 ** len(widths)``.
    - Output: ``(N, num_classes)`` logits.

    Examples
    --------
    >>> import torch
    >>> net = SmallCNN(in_channels=1, num_classes=5, widths=(8, 16))
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 5])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 15,
        widths: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.3,
        leaky_relu: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) == 0:
            raise ValueError("widths must name at least one block.")
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for i, width in enumerate(widths):
            act: nn.Module = (
                nn.LeakyReLU(leaky_relu, inplace=True) if leaky_relu > 0 else nn.ReLU(inplace=True)
            )
            blocks[f"block{i + 1}"] = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c_in, width, kernel_size=3, padding=1, bias=False),
                    bn=nn.BatchNorm2d(width),
                    act=act,
                    pool=nn.MaxPool2d(kernel_size=2, stride=2),
                )
            )
            c_in = width
        self.features = nn.Sequential(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)
        self._init_weights(leaky_relu)

    def _init_weights(self, slope: float) -> None:
        # He et al. 2015 initialisation for (leaky) rectifiers.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, a=slope, mode="fan_out", nonlinearity="leaky_relu"
                )
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.flatten(self.pool(x))
        return self.classifier(self.dropout(x))


def build_model(settings: CNNSettings, num_classes: int) -> SmallCNN:
    """The untrained network that ``settings`` describe, for ``num_classes`` classes."""
    return SmallCNN(
        in_channels=settings.in_channels,
        num_classes=num_classes,
        widths=settings.widths,
        dropout=settings.dropout,
        leaky_relu=settings.leaky_relu,
    )


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold an inference-mode batch norm into the convolution before it.

    At test time batch norm is the fixed affine map
    ``y = gamma * (z - mean) / sqrt(var + eps) + beta``; applied after ``z = w * x + b``
    it equals one convolution with

    ``w' = w * gamma / sqrt(var + eps)`` and
    ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``

    (Ioffe & Szegedy 2015, section 3.1).

    Parameters
    ----------
    conv : torch.nn.Conv2d
        The convolution (with or without bias).
    bn : torch.nn.BatchNorm2d
        The batch norm that follows it, with running statistics.

    Returns
    -------
    torch.nn.Conv2d
        A new convolution with bias, equal to ``bn(conv(x))`` in eval mode.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fuse_bn needs batch norms that track running statistics.")
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + beta)
    return fused


def fuse_bn(model: nn.Module) -> nn.Module:
    """Return an inference copy of ``model`` with every conv -> batch-norm pair folded.

    Wherever a :class:`~torch.nn.BatchNorm2d` directly follows a
    :class:`~torch.nn.Conv2d` among a module's children (as in every block of
    :class:`SmallCNN` and in any :class:`~torch.nn.Sequential`), the pair is replaced
    by one biased convolution (see :func:`fuse_conv_bn`) and an
    :class:`~torch.nn.Identity`. The input model is left unchanged.

    Parameters
    ----------
    model : torch.nn.Module
        A trained model.

    Returns
    -------
    torch.nn.Module
        A deep copy in eval mode, with fewer operations per forward pass and the same
        logits up to float rounding.

    Examples
    --------
    >>> import torch
    >>> net = SmallCNN(widths=(8, 16)).eval()
    >>> x = torch.randn(2, 1, 32, 32)
    >>> bool((fuse_bn(net)(x) - net(x)).abs().max() < 1e-4)
    True
    """
    fused = copy.deepcopy(model).eval()
    _fuse_children(fused)
    return fused


def _fuse_children(module: nn.Module) -> None:
    prev_name: str | None = None
    prev: nn.Module | None = None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d):
            assert prev_name is not None
            setattr(module, prev_name, fuse_conv_bn(prev, child))
            setattr(module, name, nn.Identity())
            prev_name, prev = None, None
            continue
        _fuse_children(child)
        prev_name, prev = name, child
