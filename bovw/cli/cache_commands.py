"""``bovw cache``: inspect, prune or empty the cache."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..cache import human_size
from ..errors import BadInputError
from ..progress import plural
from .errors import handle_errors
from .options import Option, parse_size_option


@click.group("cache")
def cache() -> None:
    """Inspect, prune or empty the cache."""


def _cache_dir_option(func):
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        help="Cache folder.",
        cls=Option,
        default_text="$BOVW_CACHE_DIR or ~/.cache/bovw",
    )(func)


@cache.command("info")
@_cache_dir_option
@handle_errors
def cache_info_command(cache_dir):
    """Show what the cache holds: size per stage and code revision, and the cap."""
    from ..cache import cache_info, default_cache_dir, default_max_size
    from ..report import format_table

    where = Path(cache_dir) if cache_dir else default_cache_dir()
    summary = cache_info(where)
    click.echo(f"Cache folder: {where}")
    click.echo(
        f"Size cap: {human_size(default_max_size(where))} (--cache-max-size, BOVW_CACHE_MAX_SIZE)"
    )
    if not summary.rows and not summary.legacy_bytes:
        click.echo("The cache is empty.")
        return
    table = [[stage, rev, str(n), human_size(size)] for stage, rev, n, size in summary.rows]
    if summary.legacy_bytes:
        table.append(
            ["(older bovw: joblib pickles, never read)", "", "", human_size(summary.legacy_bytes)]
        )
    if summary.tmp_bytes:
        table.append(["(unfinished writes)", "", "", human_size(summary.tmp_bytes)])
    table.append(
        ["total", "", str(sum(r[2] for r in summary.rows)), human_size(summary.total_bytes)]
    )
    click.echo(format_table(table, ["stage", "revision", "entries", "size"]))


def _confirm(question: str, yes: bool) -> None:
    """Ask before deleting; without a terminal to ask on, refuse unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInputError(f"{question} Standard input is not a terminal: pass --yes to confirm.")
    click.confirm(question, abort=True)


@cache.command("clear")
@_cache_dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def cache_clear_command(cache_dir, yes):
    """Delete everything bovw stored in the cache (other files are left alone)."""
    from ..cache import clear_cache, default_cache_dir, require_bovw_cache

    where = Path(cache_dir) if cache_dir else default_cache_dir()
    if not where.exists():
        click.echo(f"There is no cache at {where}.")
        return
    require_bovw_cache(where, "clear")
    _confirm(f"Delete every bovw cache entry in {where}?", yes)
    freed = clear_cache(where)
    click.echo(f"Cleared {where} ({human_size(freed)} freed).")


@cache.command("prune")
@_cache_dir_option
@click.option("--max-size", help="Evict least recently used entries down to this size, e.g. 20GB.")
@click.option("--older-than", type=float, help="Evict entries not used for this many days.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def cache_prune_command(cache_dir, max_size, older_than, yes):
    """Evict least recently used entries (default: down to the size cap)."""
    from ..cache import default_cache_dir, default_max_size, prune, require_bovw_cache

    where = Path(cache_dir) if cache_dir else default_cache_dir()
    if not where.exists():
        click.echo(f"There is no cache at {where}.")
        return
    require_bovw_cache(where, "prune")
    if older_than is not None and older_than < 0:
        raise BadInputError(f"--older-than must be a number of days >= 0, not {older_than}.")
    limit = parse_size_option("--max-size", max_size)
    if limit is None and older_than is None:
        limit = default_max_size(where)
    what = " and ".join(
        part
        for part in (
            f"down to {human_size(limit)}" if limit is not None else "",
            f"unused for {older_than:g} days" if older_than is not None else "",
        )
        if part
    )
    _confirm(f"Evict least recently used entries of {where} {what}?", yes)
    deleted, freed = prune(where, max_size=limit, older_than_days=older_than)
    click.echo(
        f"Pruned {where}: {plural(deleted, 'entry', 'entries')} deleted, {human_size(freed)} freed."
    )
