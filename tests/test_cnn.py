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


# ---------------------------------------------------------------- training

from bovw.cnn import (  # noqa: E402
    CNNSettings,
    evaluate_cnn,
    load_cnn,
    lr_at_step,
    random_resized_crop,
    train_cnn,
)

TINY = dict(
    widths=(4, 8),
    image_size=16,
    train_size=20,
    test_load_size=24,
    test_sizes=(20, 24),
    epochs=3,
    batch_size=8,
    warmup_epochs=1.0,
    lr=0.05,
    val_fraction=0.25,
)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Three easy classes of 24 x 24 gray images: horizontal stripes, vertical stripes, a blob."""
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    from bovw.data import load_dataset

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:24]
    for split, n in (("train", 8), ("test", 4)):
        for name in ("blob", "horizontal", "vertical"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                period = rng.integers(4, 8)
                if name == "horizontal":
                    img = 128 + 100 * np.sin(2 * np.pi * yy / period + rng.uniform(0, 6))
                elif name == "vertical":
                    img = 128 + 100 * np.sin(2 * np.pi * xx / period + rng.uniform(0, 6))
                else:
                    cy, cx = rng.uniform(8, 16, size=2)
                    img = 30 + 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20)
                img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i}.png"), img)
    return load_dataset(root)


def _state(result):
    return {k: v.clone() for k, v in result.model.model.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_settings_validate_names_the_bad_setting():
    CNNSettings().validate()
    CNNSettings.small_data().validate()
    for bad, name in (
        (dict(lr=0.0), "lr"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(widths=()), "widths"),
        (dict(image_size=8), "image_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(batch_size=1), "batch_size"),
        (dict(warmup_epochs=1000), "warmup_epochs"),  # more than the default epochs
        (dict(color="rgb"), "color"),
    ):
        with pytest.raises(ValueError, match=name) as info:
            CNNSettings(**bad).validate()
        assert str(info.value).count(".") >= 1 and "\n" not in str(info.value)
    s = CNNSettings(widths=(8, 16))
    assert CNNSettings.from_dict(s.to_dict()) == s
    half = CNNSettings().with_image_size(48)
    assert (half.image_size, half.train_size, half.test_load_size) == (48, 56, 72)
    assert half.test_sizes == (48, 56, 64)
    half.validate()
    with pytest.raises(ValueError, match="bogus"):
        CNNSettings.from_dict({"bogus": 1})


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at_step(t, 100, 10, 0.1) for t in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 1e-3


def test_random_resized_crop_identity_and_flip():
    x = torch.rand(6, 2, 12, 12)
    g = torch.Generator().manual_seed(0)
    same = random_resized_crop(x, 12, g, scale=(1, 1), ratio=(1, 1), hflip=False)
    assert torch.allclose(same, x, atol=1e-5)
    out = random_resized_crop(x, 12, g, scale=(1, 1), ratio=(1, 1), hflip=True)
    for a, b in zip(out, x, strict=True):
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(2), atol=1e-5)
    crops = random_resized_crop(x, 7, torch.Generator().manual_seed(1))
    assert crops.shape == (6, 2, 7, 7)
    assert crops.min() >= x.min() - 1e-5 and crops.max() <= x.max() + 1e-5


def test_training_is_deterministic_on_cpu(tiny_dataset):
    s = CNNSettings(**TINY)
    a = train_cnn(tiny_dataset, s, None, device="cpu", progress=False, evaluate=False)
    b = train_cnn(tiny_dataset, s, None, device="cpu", progress=False, evaluate=False)
    _assert_same_state(_state(a), _state(b))
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert len(a.history) == 3 and a.history[-1]["val_accuracy"] is not None
    c = train_cnn(
        tiny_dataset,
        CNNSettings(**{**TINY, "seed": 1}),
        None,
        device="cpu",
        progress=False,
        evaluate=False,
    )
    assert not torch.equal(_state(a)["classifier.weight"], _state(c)["classifier.weight"])


class _Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(tiny_dataset, tmp_path):
    s = CNNSettings(**TINY)
    full = train_cnn(
        tiny_dataset, s, tmp_path / "full", device="cpu", progress=False, evaluate=False
    )

    def kill_after_two(record):
        if record["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train_cnn(
            tiny_dataset,
            s,
            tmp_path / "run",
            device="cpu",
            progress=False,
            evaluate=False,
            on_epoch_end=kill_after_two,
        )
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert not (tmp_path / "run" / "cnn.pt").exists()
    resumed = train_cnn(
        tiny_dataset, s, tmp_path / "run", device="cpu", progress=False, evaluate=False
    )
    assert resumed.resumed_from_epoch == 2
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    _assert_same_state(_state(full), _state(resumed))
    # Other settings with the same folder: refused, not silently mixed.
    with pytest.raises(ValueError, match=r"other settings or data \(lr\); pass --restart"):
        train_cnn(
            tiny_dataset,
            CNNSettings(**{**TINY, "lr": 0.01}),
            tmp_path / "run",
            device="cpu",
            progress=False,
            evaluate=False,
        )


def test_a_run_resumes_to_more_epochs_only_where_the_schedule_allows(tiny_dataset, tmp_path):
    from bovw.errors import BadInputError

    # Stopped within a warm-up of 2 epochs, the finished steps ran at the rates a longer
    # schedule gives them too: resuming to 5 epochs trains what a fresh 5-epoch run does.
    short = CNNSettings(**{**TINY, "epochs": 3, "warmup_epochs": 2.0})
    longer = CNNSettings(**{**TINY, "epochs": 5, "warmup_epochs": 2.0})

    def kill_after_one(record):
        if record["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train_cnn(
            tiny_dataset, short, tmp_path / "run", device="cpu", progress=False,
            evaluate=False, on_epoch_end=kill_after_one,
        )  # fmt: skip
    resumed = train_cnn(
        tiny_dataset, longer, tmp_path / "run", device="cpu", progress=False, evaluate=False
    )
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 5
    fresh = train_cnn(tiny_dataset, longer, None, device="cpu", progress=False, evaluate=False)
    _assert_same_state(_state(fresh), _state(resumed))

    # Past the warm-up the cosine decay of 5 epochs differs from that of 7: refused, in
    # one sentence that offers a fresh start, and resume=False gives one.
    more = CNNSettings(**{**TINY, "epochs": 7, "warmup_epochs": 2.0})
    with pytest.raises(BadInputError, match=r"changed from epoch 3; pass --restart"):
        train_cnn(tiny_dataset, more, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(BadInputError, match=r"already trained 5 epochs, more than the 3 asked"):
        train_cnn(tiny_dataset, short, tmp_path / "run", device="cpu", progress=False)
    again = train_cnn(
        tiny_dataset, more, tmp_path / "run", device="cpu", progress=False, evaluate=False,
        resume=False,
    )  # fmt: skip
    assert again.resumed_from_epoch == 0 and len(again.history) == 7


def test_train_save_load_evaluate(tiny_dataset, tmp_path):
    s = CNNSettings(**{**TINY, "epochs": 6, "val_fraction": 0.0})
    res = train_cnn(tiny_dataset, s, tmp_path, device="cpu", progress=False)
    (tmp_path / "res").mkdir()
    m = res.metrics
    for key in (
        "accuracy",
        "mean_class_accuracy",
        "train_seconds",
        "inference_images_per_second",
        "parameters",
        "model_bytes",
        "flops_per_image",
        "confusion_matrix",
    ):
        assert key in m, key
    assert m["parameters"] == sum(p.numel() for p in res.model.model.parameters())
    assert m["mean_class_accuracy"] >= 0.6  # easy data, chance is 1/3
    assert res.history[-1]["val_accuracy"] is None
    loaded = load_cnn(tmp_path)
    assert loaded.settings == s and loaded.classes == tiny_dataset.classes
    again = evaluate_cnn(tmp_path / "cnn.json", tiny_dataset, device="cpu", time_unfused=True)
    assert again["y_pred"] == m["y_pred"]
    assert "fusion_speedup" in again
    # Weights are a plain state dict, readable with weights_only=True.
    state = torch.load(tmp_path / "cnn.pt", weights_only=True)
    assert set(state) == set(loaded.model.state_dict())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cnn(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="cnn.json"):
        load_cnn(tmp_path / "res")
