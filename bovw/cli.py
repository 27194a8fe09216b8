"""The ``bovw`` command line: one command per pipeline stage, plus the cache.

Every stage command runs the pipeline up to that stage with the same options,
reusing the cache, so ``bovw extract``, then ``bovw codebook``, ... ``bovw
evaluate`` is the same work as one ``bovw run``. Bad input gets one sentence and
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .config import DEMO_DATA, Config, ConfigError, load_config
from .data import BadInputError

EXIT_BAD_INPUT = 2


def _format_warning(message, category, filename, lineno, file=None, line=None):
    return f"warning: {message}\n"


def _csv_ints(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _csv_floats(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


# (option declaration, config key, converter)
_SETTINGS: list[tuple[click.Option, str, Any]] = []


def _setting(key: str, *decls: str, convert=None, **kwargs):
    _SETTINGS.append((decls, key, convert, kwargs))


_setting(
    "data.train_per_class",
    "--train-per-class",
    type=int,
    help="Training images per class (single-folder datasets: the split protocol).",
)
_setting(
    "data.test_per_class",
    "--test-per-class",
    type=int,
    help="At most this many test images per class.",
)
_setting("data.split_seed", "--split-seed", type=int, help="Seed of the random train/test split.")
_setting(
    "data.skip_bad",
    "--skip-bad",
    is_flag=True,
    default=None,
    help="Skip images that cannot be decoded instead of stopping.",
)
_setting(
    "sift.sizes",
    "--sizes",
    convert=_csv_ints,
    help="Dense SIFT bin sizes, e.g. 4,6,8,10 (one per scale).",
)
_setting("sift.step", "--step", type=int, help="Dense SIFT grid step in pixels.")
_setting(
    "sift.fast", "--fast/--no-fast", default=None, help="Flat (fast) or Gaussian spatial window."
)
_setting(
    "sift.color",
    "--color",
    type=click.Choice(["gray", "rgb", "hsv", "opponent"]),
    help="Color space of the descriptors.",
)
_setting(
    "sift.root",
    "--root-sift/--no-root-sift",
    default=None,
    help="RootSIFT descriptors (default: on).",
)
_setting(
    "sift.max_side",
    "--max-side",
    type=int,
    help="Shrink images to this longest side right after decoding (default: 1024; 0: keep).",
)
_setting(
    "codebook.words",
    "--words",
    type=int,
    help="Visual words in the k-means codebook (default: 1000, 64 for vlad).",
)
_setting("codebook.samples", "--samples", type=int, help="Descriptors sampled to fit the codebook.")
_setting(
    "codebook.gmm_components",
    "--gmm-components",
    type=int,
    help="Gaussians in the Fisher vector GMM.",
)
_setting(
    "codebook.pca_dims", "--pca-dims", type=int, help="PCA dimensions before the GMM (0: no PCA)."
)
_setting(
    "encoding.encoding",
    "--encoding",
    type=click.Choice(["hist", "soft", "vlad", "fisher"]),
    help="How descriptors become one vector per image (default: fisher).",
)
_setting(
    "encoding.pyramid",
    "--pyramid",
    help="Spatial pyramid, e.g. 1,2,4 or 1,2x2,3x1; auto: 1,2,4 for hist and soft, "
    "1,2x2,3x1 for vlad and fisher.",
)
_setting(
    "encoding.normalize",
    "--normalize",
    type=click.Choice(["l1", "l2", "sqrt", "none"]),
    help="Histogram normalization.",
)
_setting(
    "encoding.mirror",
    "--mirror/--no-mirror",
    default=None,
    help="Mirror augmentation: train on each image and its mirror, score both at test time "
    "(default: on).",
)
_setting(
    "classifier.kernel_map",
    "--kernel-map",
    type=click.Choice(["none", "hellinger", "chi2"]),
    help="Explicit kernel map before the linear SVM.",
)
_setting(
    "classifier.alphas",
    "--alphas",
    convert=_csv_floats,
    help="SGD regularization values tried by cross-validation.",
)
_setting(
    "classifier.cv_folds",
    "--cv-folds",
    type=int,
    help="Cross-validation folds on the training split.",
)
_setting(
    "classifier.loss",
    "--loss",
    type=click.Choice(["hinge", "log_loss", "modified_huber", "squared_hinge"]),
    help="SGD loss (hinge: linear SVM).",
)
_setting("classifier.average", "--average/--no-average", default=None, help="Averaged SGD.")
_setting("classifier.max_iter", "--max-iter", type=int, help="SGD epochs at most.")
_setting(
    "classifier.solver",
    "--solver",
    type=click.Choice(["sgd", "sklearn"]),
    help="Linear SVM solver: sgd (bovw's mini-batch LinearSVM) or sklearn (SGDClassifier).",
)


def _option_name(decls) -> str:
    first = decls[0].split("/")[0]
    return first.lstrip("-").replace("-", "_")


def common_options(func):
    """The options every pipeline command shares."""
    for decls, _key, _convert, kwargs in reversed(_SETTINGS):
        func = click.option(*decls, _option_name(decls), show_default=False, **kwargs)(func)
    func = click.option("--seed", type=int, help="Seed of sampling, k-means and SGD.")(func)
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="Settings from a TOML file (flags override it).",
    )(func)
    func = click.option(
        "--out", type=click.Path(file_okay=False), help="Run folder (default runs/<date-time>)."
    )(func)
    func = click.option(
        "--jobs", "-j", type=int, default=1, show_default=True, help="Worker processes."
    )(func)
    func = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        help="Cache folder (default $BOVW_CACHE_DIR or ~/.cache/bovw).",
    )(func)
    func = click.option(
        "--scheduler", envvar="BOVW_SCHEDULER", help="Dask scheduler address, e.g. tcp://host:8786."
    )(func)
    func = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(func)
    func = click.option(
        "--cache-max-size",
        envvar="BOVW_CACHE_MAX_SIZE",
        help="Cache size cap, enforced at the end of the run by evicting least recently used "
        "entries, e.g. 20GB (default $BOVW_CACHE_MAX_SIZE, else 20% of the disk, at most 50 GB).",
    )(func)
    func = click.option(
        "--keep-descriptors/--no-keep-descriptors",
        default=True,
        help="Keep per-image descriptors in the cache after encoding (default: keep).",
    )(func)
    func = click.argument("data", required=False, type=click.Path())(func)
    return func


def build_config(
    data: str | None, config_file: str | None, seed: int | None, options: dict
) -> Config:
    """Defaults, then the TOML file, then the flags given on the command line."""
    config = load_config(config_file) if config_file else Config()
    overrides: dict[str, Any] = {"seed": seed}
    if data is not None:
        overrides["data.path"] = str(data)
    for decls, key, convert, _kwargs in _SETTINGS:
        value = options.get(_option_name(decls))
        overrides[key] = convert(value) if convert and value is not None else value
    try:
        return config.with_overrides(overrides).validate()
    except ConfigError as exc:
        # Config names the setting; the command line adds the flag that sets it.
        flags = {key: decls[0].split("/")[0] for decls, key, _c, _k in _SETTINGS}
        flag = {**flags, "seed": "--seed"}.get(exc.setting or "")
        if flag is None:
            raise
        named = f"Setting {exc.setting}"
        raise ConfigError(
            str(exc).replace(named, f"{named} ({flag})", 1), setting=exc.setting
        ) from None


def handle_errors(func):
    """Bad input: one sentence, exit 2. Ctrl-C: say what is kept. --debug: full traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        warnings.formatwarning = _format_warning
        try:
            return func(*args, **kwargs)
        except (BadInputError, ConfigError) as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo(
                "\nInterrupted. Finished work is cached; run the same command to resume.", err=True
            )
            sys.exit(130)
        except click.ClickException:
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for users
            if debug:
                raise
            click.echo(
                f"Error: {type(exc).__name__}: {exc} (run with --debug for the traceback).",
                err=True,
            )
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="bovw")
def main(debug: bool) -> None:
    """Bag of visual words image classification: dense SIFT, codebooks, encodings, linear SVMs.

    With no DATA, commands use the demo dataset shipped in data/.
    """


def _stage_command(stage: str, help_text: str):
    @main.command(stage, help=help_text)
    @common_options
    @handle_errors
    def command(**params):
        _run_stages(stage, params)

    return command


def _run_stages(
    until: str, params: dict, *, cnn: dict | None = None, command: str | None = None
) -> None:
    """Run the pipeline up to ``until`` with the options of :func:`common_options`.

    ``params`` holds the parsed options; the stage settings among them become the
    Config. With ``cnn`` (CNN setting overrides) the CNN is trained and compared too.
    """
    from . import pipeline
    from .report import format_table
    from .run_folder import write_run_folder

    data, out, jobs, quiet = (
        params.pop("data"),
        params.pop("out"),
        params.pop("jobs"),
        params.pop("quiet"),
    )
    cache_dir, scheduler = params.pop("cache_dir"), params.pop("scheduler")
    keep_descriptors = params.pop("keep_descriptors")
    cache_max_size = _size_option("--cache-max-size", params.pop("cache_max_size"))
    if jobs < 1:
        raise BadInputError(f"--jobs must be at least 1, not {jobs}.")
    config = build_config(data, params.pop("config_file"), params.pop("seed"), params)
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
        progress=not quiet,
        on_stage=on_stage,
        keep_descriptors=keep_descriptors,
        cache_max_size=cache_max_size,
    )
    if result.cache_note:
        click.echo(result.cache_note, err=True)
    total = time.perf_counter() - t0
    run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml())

    ds = result.dataset
    rows = [[s.name, f"{s.seconds:.2f}", s.cache] for s in result.stages]
    click.echo("")
    click.echo(format_table(rows, ["stage", "seconds", "cache"]))
    # metrics.json, report.md, the plots, predictions.csv and the model.
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

    from .compare import (
        bovw_figures,
        cnn_settings_for,
        format_comparison,
        run_cnn,
        write_comparison,
    )
    from .report import write_json

    device = cnn.pop("device", "auto")
    try:
        settings = cnn_settings_for(result.dataset, **cnn).validate()
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    click.echo(f"\nCNN: training on the same split ({settings.epochs} epochs)...", err=True)
    figures = {
        "BoVW": bovw_figures(result, run_dir),
        "CNN": run_cnn(
            result.dataset, run_dir / "cnn", settings, jobs=jobs, device=device, progress=not quiet
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


def _cnn_overrides(epochs, image_size, widths, optimizer, device) -> dict:
    overrides: dict = {"device": device}
    if epochs is not None:
        overrides["epochs"] = epochs
        # Keep the warm-up a small part of a short schedule (the default is 2 epochs).
        overrides["warmup_epochs"] = min(2.0, epochs / 10)
    if image_size is not None:
        overrides["image_size"] = image_size
    if widths is not None:
        overrides["widths"] = _csv_ints(widths)
    if optimizer is not None:
        overrides["optimizer"] = optimizer
    return overrides


def cnn_options(func):
    """The CNN settings that the command line exposes (the rest: Python API)."""
    func = click.option("--cnn-epochs", type=int, help="CNN training epochs.")(func)
    func = click.option("--cnn-image-size", type=int, help="CNN training crop side in pixels.")(
        func
    )
    func = click.option("--cnn-widths", help="CNN block widths, e.g. 32,64,128,256.")(func)
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


def _cnn_params(params: dict) -> dict:
    """Take the CNN options out of ``params``; the CNN setting overrides they give."""
    return _cnn_overrides(
        *(params.pop(k) for k in ("cnn_epochs", "cnn_image_size", "cnn_widths", "cnn_optimizer")),
        params.pop("device"),
    )


@main.command("run")
@common_options
@click.option("--cnn", is_flag=True, help="Also train the CNN on the same split and compare.")
@cnn_options
@handle_errors
def run_command(cnn: bool, **params):
    """Run every stage: extract, codebook, encode, train, evaluate (--cnn: and compare)."""
    overrides = _cnn_params(params)
    _run_stages("evaluate", params, cnn=overrides if cnn else None, command="run")


@main.command("compare")
@common_options
@cnn_options
@handle_errors
def compare_command(**params):
    """BoVW and the CNN on the same split, side by side (the same as run --cnn)."""
    overrides = _cnn_params(params)
    _run_stages("evaluate", params, cnn=overrides, command="compare")


_stage_command("extract", "Dense SIFT for every image (cached per image).")
_stage_command("codebook", "Extract, then fit the visual vocabulary.")
_stage_command("encode", "Up to encoding every image as one vector.")
_stage_command("train", "Up to training the linear SVM.")
_stage_command("evaluate", "Up to evaluating on the test split (same as run).")


def _expand_inputs(inputs) -> list[Path]:
    """Files as given; folders walked recursively for image files, in sorted order."""
    from .data import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                click.echo(f"warning: no image files in folder {p}", err=True)
            paths += found
        else:
            paths.append(p)  # a missing or bad file is reported on its own line
    return paths


def _json_line(obj) -> str:
    """One line of JSON, UTF-8 text as is, and a file name's undecodable bytes as escapes.

    Python holds the bytes of a file name that are not UTF-8 as lone surrogates
    (``b"\\xff"`` as ``"\\udcff"``). Written as the JSON escape ``\\udcff``, they
    keep the line valid UTF-8, and ``os.fsencode(json.loads(line)["path"])`` gives
    the name's bytes back.
    """
    import json

    text = json.dumps(obj, ensure_ascii=False)
    # Lone surrogates can only stand inside JSON strings, where \uXXXX is their escape.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@main.command("predict")
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path(), metavar="IMAGE_OR_DIR...")
@click.option(
    "--top-k", "-k", type=int, default=1, show_default=True, help="Best classes shown per image."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (errors too).")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def predict_command(model, images, top_k, as_json, jobs, quiet):
    """Classify images with a saved model (MODEL: model.npz, model.json or a run folder).

    IMAGE_OR_DIR arguments are image files or folders (searched recursively).
    Prints one line per image: path, label and score (with --top-k, the k best
    labels and scores). Images that cannot be read are reported one by one and
    the rest are still classified; the exit code is 2 when none could be.
    """

    from tqdm.auto import tqdm

    from .persistence import load_model

    if top_k < 1:
        raise BadInputError(f"--top-k must be at least 1, not {top_k}.")
    if jobs < 1:
        raise BadInputError(f"--jobs must be at least 1, not {jobs}.")
    clf = load_model(model)
    paths = _expand_inputs(images)
    if not paths:
        raise BadInputError("No image files to classify; give image files or folders of images.")
    n_ok = n_bad = 0
    # File names that are not UTF-8 (held as surrogates) go out as their own bytes, as ls
    # prints them, instead of stopping the output with a UnicodeEncodeError.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=quiet, file=sys.stderr)
    for pred in clf.predict_stream(paths, top_k=top_k, jobs=jobs):
        bar.update(1)
        if pred.error is None:
            n_ok += 1
        else:
            n_bad += 1
        if as_json:
            line = _json_line(pred.to_dict())
        elif pred.error is not None:
            bar.write(f"error: {pred.error}", file=sys.stderr)
            continue
        elif top_k == 1:
            line = f"{pred.path}\t{pred.label}\t{pred.score:.4f}"
        else:
            line = pred.path + "\t" + "\t".join(f"{c} {s:.4f}" for c, s in pred.top_k)
        bar.write(line, file=sys.stdout)
    bar.close()
    if n_bad:
        click.echo(f"{n_ok} images classified, {n_bad} could not be read.", err=True)
    if n_ok == 0:
        sys.exit(EXIT_BAD_INPUT)


@main.command("words")
@click.argument("run_dir", type=click.Path())
@click.option(
    "--data",
    "data_path",
    type=click.Path(),
    help="Search the training images of this dataset (default: the run's recorded test images).",
)
@click.option(
    "--words",
    "n_words",
    type=int,
    default=16,
    show_default=True,
    help="Visual words shown (a random sample).",
)
@click.option(
    "--patches", "n_patches", type=int, default=10, show_default=True, help="Patches per word."
)
@click.option(
    "--images",
    "n_images",
    type=int,
    default=60,
    show_default=True,
    help="Images searched, spread over the classes.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the image and word samples."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="PNG to write (default RUN_DIR/visual_words.png).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def words_command(run_dir, data_path, n_words, n_patches, n_images, seed, out, quiet):
    """Draw the image patches nearest to a sample of the visual words of a run.

    RUN_DIR is a run folder (or its model.npz). The patches come from the test
    images the run recorded in its predictions.csv, or, with --data, from the
    training images of that dataset (split as the run split it). The dataset
    path written in the model is never used: a model may come from elsewhere.
    """
    from .data import load_dataset
    from .persistence import load_model
    from .visual_words import (
        find_word_patches,
        plot_visual_words,
        run_images,
        spread_over_classes,
    )

    for name, value in (("--words", n_words), ("--patches", n_patches), ("--images", n_images)):
        if value < 1:
            raise BadInputError(f"{name} must be at least 1, not {value}.")
    if seed < 0:
        raise BadInputError(f"--seed must be at least 0, not {seed}.")
    if data_path is not None and not Path(data_path).exists():
        raise BadInputError(
            f"The --data folder {data_path} does not exist; give the folder (or list file) of "
            "the images to search."
        )
    model = load_model(run_dir)
    folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    if data_path is not None:
        d = model.config.data
        ds = load_dataset(
            data_path,
            train_per_class=d.train_per_class,
            test_per_class=d.test_per_class,
            split_seed=d.split_seed,
            skip_bad=True,
        )
        by_class = [[s.path for s in ds.train if s.label == c] for c in range(len(ds.classes))]
        where = f"the training images of {data_path}"
    else:
        recorded = run_images(folder)
        by_class = list(recorded.values())
        where = f"the test images recorded in {folder / 'predictions.csv'}"
    picked = spread_over_classes(by_class, n_images, random_state=seed)
    if not picked:
        raise BadInputError(f"None of {where} exist here; give the images to search with --data.")
    wp = find_word_patches(
        model,
        picked,
        n_words=n_words,
        n_patches=n_patches,
        random_state=seed,
        progress=not quiet,
        skip_bad=True,
    )
    target = Path(out) if out else folder / "visual_words.png"
    plot_visual_words(wp, target)
    click.echo(
        f"Wrote {target} ({len(wp.words)} words x {n_patches} patches from {len(picked)} images)."
    )


def _size_option(flag: str, value: str | None) -> int | None:
    """Bytes from a size option such as 20GB (None when not given)."""
    from .cache import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise BadInputError(f"{flag}: {exc}.") from None


@main.group()
def cache() -> None:
    """Inspect, prune or empty the cache."""


def _cache_dir_option(func):
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        help="Cache folder (default $BOVW_CACHE_DIR or ~/.cache/bovw).",
    )(func)


@cache.command("info")
@_cache_dir_option
@handle_errors
def cache_info_command(cache_dir):
    """Show what the cache holds: size per stage and code revision, and the cap."""
    from .cache import cache_info, default_cache_dir, default_max_size
    from .report import format_table

    where = Path(cache_dir) if cache_dir else default_cache_dir()
    summary = cache_info(where)
    click.echo(f"Cache folder: {where}")
    click.echo(
        f"Size cap: {_human(default_max_size(where))} (--cache-max-size, BOVW_CACHE_MAX_SIZE)"
    )
    if not summary.rows and not summary.legacy_bytes:
        click.echo("The cache is empty.")
        return
    table = [[stage, rev, str(n), _human(size)] for stage, rev, n, size in summary.rows]
    if summary.legacy_bytes:
        table.append(
            ["(older bovw: joblib pickles, never read)", "", "", _human(summary.legacy_bytes)]
        )
    if summary.tmp_bytes:
        table.append(["(unfinished writes)", "", "", _human(summary.tmp_bytes)])
    table.append(["total", "", str(sum(r[2] for r in summary.rows)), _human(summary.total_bytes)])
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
    from .cache import CacheError, clear_cache, default_cache_dir, is_bovw_cache

    where = Path(cache_dir) if cache_dir else default_cache_dir()
    if not where.exists():
        click.echo(f"There is no cache at {where}.")
        return
    if not is_bovw_cache(where):
        raise CacheError(
            f"Refusing to clear {where}: it is not a bovw cache (no CACHEDIR.TAG marker); "
            "check --cache-dir or BOVW_CACHE_DIR."
        )
    _confirm(f"Delete every bovw cache entry in {where}?", yes)
    freed = clear_cache(where)
    click.echo(f"Cleared {where} ({_human(freed)} freed).")


@cache.command("prune")
@_cache_dir_option
@click.option("--max-size", help="Evict least recently used entries down to this size, e.g. 20GB.")
@click.option("--older-than", type=float, help="Evict entries not used for this many days.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def cache_prune_command(cache_dir, max_size, older_than, yes):
    """Evict least recently used entries (default: down to the size cap)."""
    from .cache import CacheError, default_cache_dir, default_max_size, is_bovw_cache, prune

    where = Path(cache_dir) if cache_dir else default_cache_dir()
    if not where.exists():
        click.echo(f"There is no cache at {where}.")
        return
    if not is_bovw_cache(where):
        raise CacheError(
            f"Refusing to prune {where}: it is not a bovw cache (no CACHEDIR.TAG marker); "
            "check --cache-dir or BOVW_CACHE_DIR."
        )
    if older_than is not None and older_than < 0:
        raise BadInputError(f"--older-than must be a number of days >= 0, not {older_than}.")
    limit = _size_option("--max-size", max_size)
    if limit is None and older_than is None:
        limit = default_max_size(where)
    what = " and ".join(
        part
        for part in (
            f"down to {_human(limit)}" if limit is not None else "",
            f"unused for {older_than:g} days" if older_than is not None else "",
        )
        if part
    )
    _confirm(f"Evict least recently used entries of {where} {what}?", yes)
    deleted, freed = prune(where, max_size=limit, older_than_days=older_than)
    click.echo(f"Pruned {where}: {deleted} entries deleted, {_human(freed)} freed.")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@main.group()
def cnn() -> None:
    """The small CNN baseline: summary, training, evaluation."""


@cnn.command("summary")
@click.option("--widths", default="32,64,128,256", show_default=True, help="Block widths.")
@click.option("--image-size", type=int, default=80, show_default=True, help="Input side in pixels.")
@click.option("--channels", type=int, default=1, show_default=True, help="Input channels.")
@click.option("--classes", type=int, default=15, show_default=True, help="Output classes.")
@handle_errors
def cnn_summary_command(widths, image_size, channels, classes):
    """Per-layer output shape, parameters, FLOPs and receptive field."""
    from .cnn import SmallCNN, format_summary, summarize

    try:
        model = SmallCNN(in_channels=channels, num_classes=classes, widths=_csv_ints(widths))
        shape = (channels, image_size, image_size)
        click.echo(format_summary(summarize(model, shape), shape))
    except ValueError as exc:
        raise BadInputError(str(exc)) from None


def _dataset_from_options(data, train_per_class, test_per_class, split_seed, skip_bad, jobs):
    from .data import load_dataset

    return load_dataset(
        data or DEMO_DATA,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        split_seed=split_seed or 0,
        skip_bad=skip_bad,
        n_jobs=jobs,
    )


def data_options(func):
    """Where the images are and how they are split (as in the BoVW commands)."""
    func = click.option("--skip-bad", is_flag=True, help="Skip undecodable images.")(func)
    func = click.option("--split-seed", type=int, help="Seed of the random split.")(func)
    func = click.option(
        "--test-per-class", type=int, help="At most this many test images per class."
    )(func)
    func = click.option("--train-per-class", type=int, help="Training images per class.")(func)
    func = click.argument("data", required=False, type=click.Path())(func)
    return func


@cnn.command("train")
@data_options
@cnn_options
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run folder (default runs/cnn-<date-time>)."
)
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Torch threads.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of weights, batches, augmentation."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def cnn_train_command(
    data,
    train_per_class,
    test_per_class,
    split_seed,
    skip_bad,
    cnn_epochs,
    cnn_image_size,
    cnn_widths,
    cnn_optimizer,
    device,
    out,
    jobs,
    seed,
    quiet,
):
    """Train the CNN (resuming from the run folder's last checkpoint), then evaluate it."""
    from .compare import FIGURES, _fmt, cnn_settings_for, run_cnn
    from .report import format_table, write_json

    dataset = _dataset_from_options(
        data, train_per_class, test_per_class, split_seed, skip_bad, jobs
    )
    overrides = _cnn_overrides(cnn_epochs, cnn_image_size, cnn_widths, cnn_optimizer, device)
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
def cnn_evaluate_command(
    run_dir, data, train_per_class, test_per_class, split_seed, skip_bad, jobs, device
):
    """Evaluate a trained CNN (its run folder) on a dataset's test split."""
    from .cnn import evaluate_cnn, load_cnn
    from .compare import FIGURES, _fmt
    from .report import format_table

    try:
        model = load_cnn(run_dir)
    except (ValueError, OSError) as exc:
        raise BadInputError(f"Cannot load a CNN from {run_dir}: {exc}") from None
    dataset = _dataset_from_options(
        data, train_per_class, test_per_class, split_seed, skip_bad, jobs
    )
    try:
        m = evaluate_cnn(model, dataset, jobs=jobs, device=device)
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    rows = [[label, _fmt(key, m[key])] for key, label in FIGURES.items() if key in m]
    click.echo(format_table(rows, ["", "CNN"]))


if __name__ == "__main__":  # pragma: no cover
    main()
