"""The ``bovw cnn`` commands (summary, train, evaluate) and the CNN options of ``run``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ..errors import BadInputError
from .errors import handle_errors
from .options import CsvList, Option, build_config, setting_options


def _cnn_overrides(epochs, image_size, widths, optimizer, device) -> dict:
    overrides: dict = {"device": device}
    if epochs is not None:
        overrides["epochs"] = epochs
        # Keep the warm-up a small part of a short schedule (the default is 2 epochs).
        overrides["warmup_epochs"] = min(2.0, epochs / 10)
    if image_size is not None:
        overrides["image_size"] = image_size
    if widths is not None:
        overrides["widths"] = widths
    if optimizer is not None:
        overrides["optimizer"] = optimizer
    return overrides


def cnn_options(func):
    """The CNN settings that the command line exposes (the rest: Python API)."""
    func = click.option("--cnn-epochs", type=int, help="CNN training epochs.")(func)
    func = click.option("--cnn-image-size", type=int, help="CNN training crop side in pixels.")(
        func
    )
    func = click.option(
        "--cnn-widths", type=CsvList(int), metavar="INT,...", help="CNN block widths."
    )(func)
    func = click.option(
        "--cnn-optimizer", type=click.Choice(["sgd", "adamw"]), help="CNN optimizer."
    )(func)
    func = click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the CNN runs (auto: CUDA when available).",
    )(func)
    return func


def pop_cnn_overrides(params: dict) -> dict:
    """Take the CNN options out of ``params``; the CNN setting overrides they give."""
    return _cnn_overrides(
        *(params.pop(k) for k in ("cnn_epochs", "cnn_image_size", "cnn_widths", "cnn_optimizer")),
        params.pop("device"),
    )


def data_options(func):
    """Where the images are and how they are split: the data settings' options and DATA."""
    func = setting_options("data.")(func)
    return click.argument("data", required=False, type=click.Path())(func)


def _dataset_from_options(data: str | None, params: dict, jobs: int):
    """The dataset of the DATA argument and the data settings' options (taken from ``params``)."""
    from ..data import load_dataset

    d = build_config(data, None, params).data
    return load_dataset(
        d.path,
        train_per_class=d.train_per_class,
        test_per_class=d.test_per_class,
        split_seed=d.split_seed,
        skip_bad=d.skip_bad,
        n_jobs=jobs,
    )


@click.group()
def cnn() -> None:
    """The small CNN baseline: summary, training, evaluation."""


@cnn.command("summary")
@click.option(
    "--widths", type=CsvList(int), default="32,64,128,256", show_default=True, help="Block widths."
)
@click.option("--image-size", type=int, default=80, show_default=True, help="Input side in pixels.")
@click.option("--channels", type=int, default=1, show_default=True, help="Input channels.")
@click.option("--classes", type=int, default=15, show_default=True, help="Output classes.")
@handle_errors
def cnn_summary_command(widths, image_size, channels, classes):
    """Per-layer output shape, parameters, FLOPs and receptive field."""
    from ..cnn import SmallCNN, format_summary, summarize

    try:
        model = SmallCNN(in_channels=channels, num_classes=classes, widths=widths)
        shape = (channels, image_size, image_size)
        click.echo(format_summary(summarize(model, shape), shape))
    except ValueError as exc:
        raise BadInputError(str(exc)) from None


@cnn.command("train")
@data_options
@cnn_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run folder.",
    cls=Option,
    default_text="runs/cnn-<date-time>",
)
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Torch threads.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of weights, batches, augmentation."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def cnn_train_command(data, out, jobs, seed, quiet, **params):
    """Train the CNN (resuming from the run folder's last checkpoint), then evaluate it."""
    from ..compare import FIGURES, _fmt, cnn_settings_for, run_cnn
    from ..report import format_table, write_json

    overrides = pop_cnn_overrides(params)
    dataset = _dataset_from_options(data, params, jobs)
    device = overrides.pop("device")
    try:
        settings = cnn_settings_for(dataset, seed=seed, **overrides).validate()
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("cnn-%Y%m%d-%H%M%S")
    click.echo(f"bovw cnn train: {dataset.summary()}", err=True)
    figures = run_cnn(dataset, run_dir, settings, jobs=jobs, device=device, progress=not quiet)
    rows = [[label, _fmt(key, figures[key])] for key, label in FIGURES.items() if key in figures]
    click.echo(format_table(rows, ["", "CNN"]))
    write_json(run_dir / "metrics.json", {"cnn": figures, "classes": dataset.classes})
    click.echo(f"\nRun folder: {run_dir}")


@cnn.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@data_options
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Torch threads.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@handle_errors
def cnn_evaluate_command(run_dir, data, jobs, device, **params):
    """Evaluate a trained CNN (its run folder) on a dataset's test split."""
    from ..cnn import evaluate_cnn, load_cnn
    from ..compare import FIGURES, _fmt
    from ..report import format_table

    # A `bovw compare` (or `bovw run --cnn`) run folder keeps its CNN in cnn/.
    if not (Path(run_dir) / "cnn.json").exists() and (Path(run_dir) / "cnn" / "cnn.json").exists():
        run_dir = str(Path(run_dir) / "cnn")
    try:
        model = load_cnn(run_dir)
    except (ValueError, OSError) as exc:
        raise BadInputError(f"Cannot load a CNN from {run_dir}: {exc}") from None
    dataset = _dataset_from_options(data, params, jobs)
    try:
        m = evaluate_cnn(model, dataset, jobs=jobs, device=device)
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    rows = [[label, _fmt(key, m[key])] for key, label in FIGURES.items() if key in m]
    click.echo(format_table(rows, ["", "CNN"]))
