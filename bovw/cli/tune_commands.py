"""``bovw tune``: settings chosen by cross-validation on the training split (:mod:`bovw.tune`).

It takes every option of ``bovw run`` (they set the base the search starts from),
plus ``--budget`` and ``--try``; it prints a ranked table and writes the winner's
``config.toml``, which ``bovw run --config`` takes, and ``tune.json`` with every trial.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

import click

from ..config import DEMO_DATA
from ..errors import BadInputError
from ..parallel import check_scheduler_timeout, resolve_jobs, scheduler_address
from .errors import handle_errors
from .options import build_config, parse_size_option, pipeline_options


def _score(trial) -> str:
    if math.isnan(trial.score):
        return "-"
    return f"{trial.score:.4f} ± {trial.score_std:.4f}"


def _write(out_dir: Path, data: str, result, *, complete: bool) -> None:
    """config.toml (the best so far) and tune.json (every trial), after every trial.

    Written after each trial, not only at the end: a crash, Ctrl-C or a killed
    job keeps what was learnt (and a rerun finds those trials in the cache).
    """
    summary = {
        "data": data,
        "complete": complete,
        "train_images": result.train_images,
        "cv_folds": result.cv_folds,
        "budget_seconds": result.budget_seconds,
        "seconds": round(result.seconds, 2),
        "winner": result.winner.to_dict(),
        "trials": [t.to_dict() for t in result.trials],
    }
    for name, text in (
        ("config.toml", result.winner.config.to_toml()),
        ("tune.json", json.dumps(summary, indent=2) + "\n"),
    ):
        partial = out_dir / f".{name}.partial"
        partial.write_text(text)
        partial.replace(out_dir / name)


@click.command("tune")
@pipeline_options
@click.option(
    "--budget",
    type=float,
    default=60.0,
    show_default=True,
    metavar="MINUTES",
    help="Time for the search: a candidate starts only if twice its estimated time fits in "
    "what is left.",
)
@click.option(
    "--try",
    "tries",
    multiple=True,
    metavar="NAME=V1|V2",
    help="A setting and the values to try, e.g. codebook.gmm_components=64|128|256 "
    "(repeat for more; default: a space per encoding, see the README).",
)
@handle_errors
def tune_command(budget: float, tries: tuple[str, ...], **params):
    """Choose settings by cross-validation on the training split (test labels are not read).

    Starting from the settings given (flags and --config), tries one change at a time,
    keeps the best, and writes the winner as config.toml for `bovw run --config`.
    """
    from ..pipeline import configured_dataset
    from ..report import format_table
    from ..tune import parse_space, tune

    data, out, jobs, quiet = (params.pop(k) for k in ("data", "out", "jobs", "quiet"))
    if not budget > 0:
        raise BadInputError(f"--budget must be a positive number of minutes, not {budget:g}.")
    run_options = {
        "cache_dir": params.pop("cache_dir"),
        "scheduler": scheduler_address(params.pop("scheduler")),
        "scheduler_timeout": check_scheduler_timeout(params.pop("scheduler_timeout")),
        "keep_descriptors": params.pop("keep_descriptors"),
        "cache_max_size": parse_size_option("--cache-max-size", params.pop("cache_max_size")),
        "memory_limit": parse_size_option("--memory-limit", params.pop("memory_limit")),
        "jobs": resolve_jobs(jobs),
        "progress": not quiet,
    }
    # Unresolved: a candidate of another encoding gets that encoding's words and pyramid.
    config = build_config(data, params.pop("config_file"), params, resolve=False)
    space = parse_space(list(tries)) if tries else None
    if data is None and config.data.path == str(DEMO_DATA) and not DEMO_DATA.is_dir():
        raise BadInputError(f"The demo dataset {DEMO_DATA} is missing; give a DATA folder.")
    d = config.data
    dataset = configured_dataset(config, jobs=run_options["jobs"])
    click.echo(
        f"bovw tune: {d.path}: {len(dataset.train):,} training images, "
        f"{config.classifier.cv_folds}-fold cross-validation, budget {budget:g} min",
        err=True,
    )
    t0 = time.perf_counter()
    out_dir = Path(out) if out else Path("runs") / datetime.now().strftime("tune-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_trial(trial, so_far):
        if trial.done:
            line = f"{_score(trial)} ({trial.validation})  {trial.seconds:7.1f} s"
        else:
            line = trial.status
        click.echo(f"  trial {trial.describe()}: {line}", err=True)
        _write(out_dir, d.path, so_far, complete=False)

    result = tune(
        config,
        dataset,
        space=space,
        budget_seconds=budget * 60,
        on_trial=on_trial,
        **run_options,
    )
    _write(out_dir, d.path, result, complete=True)
    rows = [
        [str(i), _score(t), t.validation, f"{t.seconds:.1f}", f"{t.alpha:g}", t.describe()]
        for i, t in enumerate(result.ranked(), 1)
    ]
    click.echo("")
    click.echo(format_table(rows, ["rank", "validation score", "on", "s", "alpha", "changes"]))
    skipped = [t for t in result.trials if not t.done]
    for t in skipped:
        click.echo(f"  not run: {t.describe()} ({t.status})")
    click.echo(
        f"\nWinner: {result.winner.describe()}; settings in {out_dir / 'config.toml'} "
        f"(bovw run --config {out_dir / 'config.toml'})  (total {time.perf_counter() - t0:.1f} s)"
    )
