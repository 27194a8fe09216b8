"""The pipeline commands: ``run``, ``compare`` and one command per stage.

Every stage command runs the pipeline up to that stage with the same options,
reusing the cache, so ``bovw extract``, then ``bovw codebook``, ... ``bovw
evaluate`` is the same work as one ``bovw run``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import click

from ..config import DEMO_DATA
from ..errors import BadInputError
from ..parallel import check_scheduler_timeout, resolve_jobs, scheduler_address
from ..progress import plural
from .cnn_commands import cnn_options, pop_cnn_overrides
from .errors import handle_errors
from .options import build_config, parse_size_option, pipeline_options


def run_stages(
    until: str, params: dict, *, cnn: dict | None = None, command: str | None = None
) -> None:
    """Run the pipeline up to ``until`` with the options of :func:`pipeline_options`.

    ``params`` holds the parsed options; the settings among them become the
    Config. With ``cnn`` (CNN setting overrides) the CNN is trained and compared too.
    """
    from .. import pipeline
    from ..report import format_table
    from ..run_folder import write_run_folder

    data, out, jobs, quiet = (params.pop(k) for k in ("data", "out", "jobs", "quiet"))
    cache_dir, scheduler = params.pop("cache_dir"), params.pop("scheduler")
    scheduler_timeout = params.pop("scheduler_timeout")
    keep_descriptors = params.pop("keep_descriptors")
    cache_max_size = parse_size_option("--cache-max-size", params.pop("cache_max_size"))
    memory_limit = parse_size_option("--memory-limit", params.pop("memory_limit"))
    jobs = resolve_jobs(jobs)
    # Checked here, before the dataset is read: a typo must not cost a run's first minutes.
    scheduler = scheduler_address(scheduler)
    scheduler_timeout = check_scheduler_timeout(scheduler_timeout)
    config = build_config(data, params.pop("config_file"), params)
    if data is None and config.data.path == str(DEMO_DATA) and not DEMO_DATA.is_dir():
        raise BadInputError(f"The demo dataset {DEMO_DATA} is missing; give a DATA folder.")
    t0 = time.perf_counter()

    def on_stage(stage):
        click.echo(
            f"  {stage.name:<9} {stage.seconds:8.2f} s  cache {stage.cache}"
            + (f" ({stage.detail})" if stage.detail else ""),
            err=True,
        )

    click.echo(f"bovw {command or until}: {config.data.path}", err=True)
    result = pipeline.run(
        config,
        until=until,
        cache_dir=cache_dir,
        jobs=jobs,
        scheduler=scheduler,
        scheduler_timeout=scheduler_timeout,
        progress=not quiet,
        on_stage=on_stage,
        keep_descriptors=keep_descriptors,
        cache_max_size=cache_max_size,
        memory_limit=memory_limit,
    )
    if result.cache_note:
        click.echo(result.cache_note, err=True)
    total = time.perf_counter() - t0
    run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")

    ds = result.dataset
    rows = [[s.name, f"{s.seconds:.2f}", s.cache] for s in result.stages]
    click.echo("")
    click.echo(format_table(rows, ["stage", "seconds", "cache"]))
    # config.toml, metrics.json, report.md, the plots, predictions.csv and the model.
    write_run_folder(run_dir, result, total_seconds=total)
    if result.metrics is not None:
        m = result.metrics
        click.echo("")
        click.echo(
            format_table(
                [
                    [
                        config.encoding.encoding,
                        f"{m['mean_class_accuracy']:.4f}",
                        f"{m['accuracy']:.4f}",
                        str(len(ds.train)),
                        str(len(ds.test)),
                    ]
                ],
                ["encoding", "mean class acc.", "accuracy", "train", "test"],
            )
        )
    if cnn is not None and result.metrics is not None:
        _compare_with_cnn(result, run_dir, cnn, jobs=jobs, quiet=quiet)
    click.echo(f"\nRun folder: {run_dir}  (total {time.perf_counter() - t0:.1f} s)")


def _compare_with_cnn(result, run_dir: Path, cnn: dict, *, jobs: int, quiet: bool) -> None:
    """Train the CNN on the same split; print and write the side-by-side comparison."""
    import json

    from ..compare import (
        bovw_figures,
        cnn_settings_for,
        format_comparison,
        run_cnn,
        write_comparison,
    )
    from ..report import write_json

    device = cnn.pop("device", "auto")
    restart = cnn.pop("restart", False)
    try:
        settings = cnn_settings_for(result.dataset, **cnn).validate()
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    click.echo(
        f"\nCNN: training on the same split ({plural(settings.epochs, 'epoch')})...", err=True
    )
    figures = {
        "BoVW": bovw_figures(result, run_dir),
        "CNN": run_cnn(
            result.dataset,
            run_dir / "cnn",
            settings,
            jobs=jobs,
            device=device,
            progress=not quiet,
            resume=not restart,
        ),
    }
    click.echo("")
    click.echo(format_comparison(figures))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["bovw"] = figures["BoVW"]
    metrics["cnn"] = figures["CNN"]
    write_json(metrics_path, metrics)
    md, png = write_comparison(run_dir, figures, result.dataset)
    click.echo(f"Comparison: {md}, {png}")


@click.command("run")
@pipeline_options
@click.option("--cnn", is_flag=True, help="Also train the CNN on the same split and compare.")
@cnn_options
@handle_errors
def run_command(cnn: bool, **params):
    """Run every stage: extract, codebook, encode, train, evaluate (--cnn: and compare)."""
    overrides = pop_cnn_overrides(params)
    run_stages("evaluate", params, cnn=overrides if cnn else None, command="run")


@click.command("compare")
@pipeline_options
@cnn_options
@handle_errors
def compare_command(**params):
    """BoVW and the CNN on the same split, side by side (the same as run --cnn)."""
    overrides = pop_cnn_overrides(params)
    run_stages("evaluate", params, cnn=overrides, command="compare")


def _stage_command(stage: str, help_text: str) -> click.Command:
    @click.command(stage, help=help_text)
    @pipeline_options
    @handle_errors
    def command(**params):
        run_stages(stage, params)

    return command


#: Every pipeline command, for :mod:`bovw.cli` to add to the group.
COMMANDS = [
    run_command,
    compare_command,
    _stage_command("extract", "Dense SIFT for every image (cached per image)."),
    _stage_command("codebook", "Extract, then fit the visual vocabulary."),
    _stage_command("encode", "Up to encoding every image as one vector."),
    _stage_command("train", "Up to training the linear SVM."),
    _stage_command("evaluate", "Up to evaluating on the test split (same as run)."),
]
