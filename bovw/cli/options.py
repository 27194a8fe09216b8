"""Command-line options: generated from the settings' metadata, and the Config they build.

Each setting of :class:`~bovw.config.Config` that declares a flag becomes one click
option: its help, choices, unit (the metavar) and default (shown as click's
``[default: ...]``) come from the setting's :class:`~bovw.schema.Meta`, so
``--help``, the README's option table and the checks of
:meth:`~bovw.config.Config.validate` cannot disagree. The options default to None
("not given"), so that a flag overrides the ``--config`` file only when given.
"""

from __future__ import annotations

import typing
import warnings
from collections.abc import Callable
from typing import Any

import click

from ..config import Config, ConfigError, load_config, settings
from ..errors import BadInputError
from ..parallel import DEFAULT_SCHEDULER_TIMEOUT
from ..schema import SettingInfo, default_text


class CsvList(click.ParamType):
    """Comma-separated numbers, e.g. ``4,6,8,10``, as a tuple of ``item``."""

    def __init__(self, item: type):
        self.item = item
        self.name = f"{item.__name__} list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            what = "integers" if self.item is int else "numbers"
            self.fail(f"expected comma-separated {what}, got {value!r}", param, ctx)


class Option(click.Option):
    """A click option whose default is shown in words: ``[default: 4,6,8,10]``.

    click shows a string ``show_default`` in parentheses, and the settings'
    options default to None (not given); ``default_text`` is what the default
    means, from :func:`~bovw.schema.default_text` or written with the option.
    """

    def __init__(self, *args: Any, default_text: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.default_text = default_text
        #: The help without the default, for the README's option table.
        self.plain_help = self.help or ""
        if default_text:
            self.help = f"{self.plain_help}  [default: {default_text}]"


def param_name(flag: str) -> str:
    """The Python name click gives the option ``flag`` (``"--max-side"``: ``"max_side"``)."""
    return flag.lstrip("-").replace("-", "_")


def _without_none(hint: Any) -> Any:
    """``int`` for ``int | None``: an option left out is already None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is not tuple and len(args) == 1 else hint


def setting_option(info: SettingInfo) -> Callable:
    """The click option of one setting (which must have a flag)."""
    meta, hint = info.meta, _without_none(info.hint)
    flag = meta.flag
    if flag is None:
        raise ValueError(f"setting {info.name} has no command-line flag")
    unit = meta.unit.upper() if meta.unit else None
    kwargs: dict[str, Any] = {"default": None, "help": meta.help}
    if hint is bool:
        decls = [f"{flag}/--no-{flag[2:]}"]
    elif meta.choices is not None:
        decls, kwargs["type"] = [flag], click.Choice(meta.choices)
    elif typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        decls, kwargs["type"] = [flag], CsvList(item)
        kwargs["metavar"] = f"{unit or item.__name__.upper()},..."
    else:
        decls, kwargs["type"] = [flag], hint
        if unit:
            kwargs["metavar"] = unit
    return click.option(
        *decls, param_name(flag), cls=Option, default_text=default_text(info), **kwargs
    )


def flagged_settings(prefix: str = "") -> list[SettingInfo]:
    """The settings with a flag, in declaration order (those whose name starts with ``prefix``)."""
    return [s for s in settings() if s.meta.flag and s.name.startswith(prefix)]


def setting_options(prefix: str = "") -> Callable:
    """A decorator adding the options of :func:`flagged_settings` (``prefix``: a section)."""

    def decorate(func):
        for info in reversed(flagged_settings(prefix)):
            func = setting_option(info)(func)
        return func

    return decorate


def run_options(func):
    """The options of a pipeline run that are not settings: where, how fast, how loud."""
    for option in reversed(
        [
            click.argument("data", required=False, type=click.Path()),
            click.option(
                "--config",
                "config_file",
                type=click.Path(dir_okay=False),
                help="Settings from a TOML file (flags override it).",
            ),
            click.option(
                "--out",
                type=click.Path(file_okay=False),
                help="Run folder.",
                cls=Option,
                default_text="runs/<date-time>",
            ),
            click.option(
                "--jobs",
                "-j",
                type=int,
                default=1,
                cls=Option,
                default_text="1",
                metavar="N",
                help="Worker processes (BLAS and OpenCV held to one thread each).",
            ),
            click.option(
                "--cache-dir",
                type=click.Path(file_okay=False),
                help="Cache folder.",
                cls=Option,
                default_text="$BOVW_CACHE_DIR or ~/.cache/bovw",
            ),
            click.option(
                "--cache-max-size",
                envvar="BOVW_CACHE_MAX_SIZE",
                metavar="SIZE",
                help="Cache size cap, e.g. 20GB, enforced at the end of the run by evicting "
                "least recently used entries.",
                cls=Option,
                default_text="$BOVW_CACHE_MAX_SIZE, else 20% of the disk, at most 50 GB",
            ),
            click.option(
                "--memory-limit",
                metavar="SIZE",
                help="Memory the training may hold, e.g. 8GB; past it the SVM is trained from "
                "the Gram matrix of the features on disk when that fits, else by streaming "
                "SGD over them.",
                cls=Option,
                default_text="a quarter of the machine's memory",
            ),
            click.option(
                "--keep-descriptors/--no-keep-descriptors",
                default=True,
                cls=Option,
                default_text="on",
                help="Keep per-image descriptors in the cache after encoding (off: only the "
                "encoded features, a fraction of the size).",
            ),
            click.option(
                "--scheduler",
                envvar="BOVW_SCHEDULER",
                metavar="ADDR",
                help="Run the parallel stages on a Dask cluster, e.g. tcp://host:8786.",
                cls=Option,
                default_text="$BOVW_SCHEDULER, else local processes",
            ),
            click.option(
                "--scheduler-timeout",
                envvar="BOVW_SCHEDULER_TIMEOUT",
                type=float,
                default=DEFAULT_SCHEDULER_TIMEOUT,
                metavar="SECONDS",
                help="With --scheduler: stop with an error once the cluster has had no workers "
                "for this long while work is pending.",
                cls=Option,
                default_text=f"$BOVW_SCHEDULER_TIMEOUT, else {DEFAULT_SCHEDULER_TIMEOUT:g}",
            ),
            click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
        ]
    ):
        func = option(func)
    return func


def pipeline_options(func):
    """Every option of the pipeline commands: the run's, then the settings'."""
    return run_options(setting_options()(func))


def build_config(
    data: str | None, config_file: str | None, params: dict[str, Any], resolve: bool = True
) -> Config:
    """Defaults, then the TOML file, then the flags given on the command line, validated.

    Parameters
    ----------
    data : str or None
        The DATA argument (``data.path``).
    config_file : str or None
        The ``--config`` file.
    params : dict
        The parsed options; the settings' options are taken out of it.
    resolve : bool
        Resolve the ``"auto"`` settings (:meth:`Config.validate`); ``bovw tune`` keeps
        them, so that each candidate resolves them for itself.

    Raises
    ------
    ConfigError
        Naming the bad setting and the flag that sets it.
    """
    config = load_config(config_file) if config_file else Config()
    overrides: dict[str, Any] = {"data.path": None if data is None else str(data)}
    for info in flagged_settings():
        overrides[info.name] = params.pop(param_name(info.meta.flag), None)
    try:
        config = config.with_overrides(overrides).validate(resolve=resolve)
    except ConfigError as exc:
        # Config names the setting; the command line adds the flag that sets it.
        flag = next((s.meta.flag for s in flagged_settings() if s.name == exc.setting), None)
        if flag is None:
            raise
        named = f"Setting {exc.setting}"
        raise ConfigError(
            str(exc).replace(named, f"{named} ({flag})", 1), setting=exc.setting
        ) from None
    _warn_flags_without_effect(
        config, [name for name, value in overrides.items() if value is not None]
    )
    return config


def _warn_flags_without_effect(config: Config, given: list[str]) -> None:
    """A warning for each flag given that the run's encoding does not use (``Meta.encodings``)."""
    encoding = config.encoding.encoding
    for info in flagged_settings():
        applies = info.meta.encodings
        if info.name in given and applies is not None and encoding not in applies:
            warnings.warn(
                f"{info.meta.flag} has no effect with --encoding {encoding}: it applies to "
                f"{', '.join(applies)} only.",
                stacklevel=3,
            )


def parse_size_option(flag: str, value: str | None) -> int | None:
    """Bytes from a size option such as 20GB (None when not given)."""
    from ..cache import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise BadInputError(f"{flag}: {exc}.") from None
