"""The ``bovw cnn`` commands (summary, train, evaluate) and the CNN options of ``run``.

One naming everywhere: the CNN's settings are ``--cnn-epochs``, ``--cnn-image-size``,
``--cnn-widths`` and ``--cnn-optimizer`` in ``cnn train``, ``cnn summary``, ``compare``
and ``run --cnn`` alike. The prefix is kept (not dropped) because ``compare`` and
``run`` take the BoVW settings too, where ``--image-size`` or ``--epochs`` would be
ambiguous. ``--device`` and ``--restart`` say where and how the CNN trains, not what
it is, and have no prefix.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ..errors import BadInputError
from ..progress import plural
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


def _shape_options(func):
    """The CNN settings that shape the network (what ``cnn summary`` describes)."""
    func = click.option("--cnn-image-size", type=int, help="CNN training crop side in pixels.")(
        func
    )
    return click.option(
        "--cnn-widths", type=CsvList(int), metavar="INT,...", help="CNN block widths."
    )(func)


def _device_option(func):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the CNN runs (auto: CUDA when available, else the CPU).",
    )(func)


def cnn_options(func):
    """The CNN settings that the command line exposes (the rest: Python API)."""
    func = click.option("--cnn-epochs", type=int, help="CNN training epochs.")(func)
    func = _shape_options(func)
    func = click.option(
        "--cnn-optimizer", type=click.Choice(["sgd", "adamw"]), help="CNN optimizer."
    )(func)
    func = click.option(
        "--restart",
        is_flag=True,
        help="Train the CNN afresh, discarding the checkpoint in the run folder.",
    )(func)
    return _device_option(func)


def pop_cnn_overrides(params: dict) -> dict:
    """Take the CNN options out of ``params``; the CNN setting overrides they give.

    ``device`` and ``restart`` are among them, for the caller to pop before the
    overrides become settings.
    """
    overrides = _cnn_overrides(
        *(params.pop(k) for k in ("cnn_epochs", "cnn_image_size", "cnn_widths", "cnn_optimizer")),
        params.pop("device"),
    )
    overrides["restart"] = params.pop("restart")
    return overrides


def data_options(func):
    """Where the images are and how they are split: the data settings' options and DATA."""
    func = setting_options("data.")(func)
    return click.argument("data", required=False, type=click.Path())(func)


def _dataset_from_options(data: str | None, params: dict, jobs: int):
    """The dataset of the DATA argument and the data settings' options (taken from ``params``)."""
    from ..pipeline import configured_dataset

    return configured_dataset(build_config(data, None, params), jobs=jobs)


@click.group()
def cnn() -> None:
    """The small CNN baseline: summary, training, evaluation."""


@cnn.command("summary")
@data_options
@_shape_options
@handle_errors
def cnn_summary_command(data, cnn_image_size, cnn_widths, **params):
    """Per-layer output shape, parameters, FLOPs and receptive field.

    Of the network that ``bovw cnn train`` (and ``bovw compare``) builds for DATA
    with the same options: its classes, recipe (the small-data preset below 1,000
    training images) and training crop size.
    """
    from ..cnn import format_summary, summarize
    from ..cnn.model import build_model
    from ..compare import cnn_settings_for

    overrides = _cnn_overrides(None, cnn_image_size, cnn_widths, None, "auto")
    overrides.pop("device")
    dataset = _dataset_from_options(data, params, 1)
    try:
        settings = cnn_settings_for(dataset, **overrides).validate()
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    shape = (settings.in_channels, settings.image_size, settings.image_size)
    model = build_model(settings, len(dataset.classes))
    click.echo(
        f"bovw cnn summary: the CNN for {dataset.summary()}: "
        f"{plural(len(settings.widths), 'block')} of widths "
        f"{','.join(map(str, settings.widths))}, {settings.image_size} px crops",
        err=True,
    )
    click.echo(format_summary(summarize(model, shape), shape))


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
    restart = overrides.pop("restart")
    try:
        settings = cnn_settings_for(dataset, seed=seed, **overrides).validate()
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("cnn-%Y%m%d-%H%M%S")
    click.echo(f"bovw cnn train: {dataset.summary()}", err=True)
    figures = run_cnn(
        dataset,
        run_dir,
        settings,
        jobs=jobs,
        device=device,
        progress=not quiet,
        resume=not restart,
    )
    rows = [[label, _fmt(key, figures[key])] for key, label in FIGURES.items() if key in figures]
    click.echo(format_table(rows, ["", "CNN"]))
    write_json(run_dir / "metrics.json", {"cnn": figures, "classes": dataset.classes})
    click.echo(f"\nRun folder: {run_dir}")


@cnn.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@data_options
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Torch threads.")
@_device_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def cnn_evaluate_command(run_dir, data, jobs, device, quiet, **params):
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
    if not quiet:
        click.echo(f"bovw cnn evaluate: {run_dir} on {dataset.summary()}", err=True)
    try:
        m = evaluate_cnn(model, dataset, jobs=jobs, device=device, progress=not quiet)
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    rows = [[label, _fmt(key, m[key])] for key, label in FIGURES.items() if key in m]
    click.echo(format_table(rows, ["", "CNN"]))
