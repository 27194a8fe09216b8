"""Tests for the small CNN: summary closed forms, BN folding, training determinism and resume."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from bovw.cnn.model import SmallCNN, fuse_bn  # noqa: E402
from bovw.cnn.summary import format_summary, summarize, summary_totals  # noqa: E402

# ---------------------------------------------------------------- summary


def test_summary_worked_example():
    # Issue 5: 16 filters of 5x5 over 8 x 32 x 32, padding 2.
    rows = summarize(nn.Conv2d(8, 16, kernel_size=5, padding=2), (8, 32, 32))
    assert len(rows) == 1
    assert rows[0].params == 3216
    assert rows[0].output_shape == (16, 32, 32)
    assert rows[0].flops == 2 * 16 * 32 * 32 * 8 * 5 * 5
    assert rows[0].flops == pytest.approx(6.5e6, rel=0.01)
    assert rows[0].receptive_field == 5


@pytest.mark.parametrize(
    ("widths", "in_ch", "size"), [((32, 64, 128, 256), 1, 64), ((4, 8, 16), 3, 37)]
)
def test_summary_matches_torch(widths, in_ch, size):
    net = SmallCNN(in_channels=in_ch, num_classes=7, widths=widths).eval()
    rows = summarize(net, (in_ch, size, size))
    assert summary_totals(rows)["params"] == sum(p.numel() for p in net.parameters())
    # Output shapes agree with a real forward pass through each leaf module.
    shapes = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
        for n, m in net.named_modules()
        if len(list(m.children())) == 0
    ]
    with torch.no_grad():
        net(torch.zeros(1, in_ch, size, size))
    for h in hooks:
        h.remove()
    for r in rows:
        assert r.output_shape == shapes[r.name], r.name
    text = format_summary(rows, (in_ch, size, size))
    assert "total" in text and f"{summary_totals(rows)['params']:,}" in text


def test_receptive_field_closed_form():
    # r_L = 1 + sum (K_l - 1) prod_{i<l} S_i; average pooling has the same closed form as
    # max pooling and, unlike it, passes a gradient to every input of its window.
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 2, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 2, 5, stride=2, padding=2),
    )
    rf = [r.receptive_field for r in summarize(net, (1, 64, 64))]
    # 1+2=3; +1*1=4; +2*2=8; +1*4=10; +4*4=26
    assert rf == [3, 4, 8, 10, 26]
    # The receptive field of one unit is the set of input pixels whose gradient is non-zero.
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    net.eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
    y = net(x)
    y[0, 0, 4, 4].backward()
    rows_nz = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert int(rows_nz.max() - rows_nz.min() + 1) == 26


def test_summary_rejects_bad_input():
    with pytest.raises(ValueError, match="channels"):
        summarize(nn.Conv2d(3, 4, 3), (1, 16, 16))
    with pytest.raises(ValueError, match="too small"):
        summarize(SmallCNN(widths=(4, 4, 4, 4, 4)), (1, 16, 16))
    with pytest.raises(TypeError, match="closed form"):
        summarize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU()), (1, 8, 8))


# ---------------------------------------------------------------- model and BN folding


def test_model_any_input_size_and_leaky():
    net = SmallCNN(in_channels=3, num_classes=4, widths=(4, 8), leaky_relu=0.1)
    assert isinstance(net.features.block1.act, nn.LeakyReLU)
    assert net(torch.zeros(2, 3, 20, 28)).shape == (2, 4)
    assert isinstance(SmallCNN(widths=(4,)).features.block1.act, nn.ReLU)


def test_fuse_bn_matches_unfused():
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, num_classes=5, widths=(8, 16, 32))
    # Give the batch norms non-trivial statistics and affine parameters.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 1, 32, 32) * 2 + 0.5)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    net.eval()
    fused = fuse_bn(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # original untouched
    x = torch.randn(4, 1, 40, 40)
    with torch.no_grad():
        diff = (fused(x) - net(x)).abs().max().item()
    assert diff < 1e-4
    # The fused model has fewer parameters (BN gone) but one bias per conv.
    rows = summarize(fused, (1, 40, 40))
    assert summary_totals(rows)["params"] == sum(p.numel() for p in fused.parameters())
