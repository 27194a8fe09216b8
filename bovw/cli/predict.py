"""``bovw predict``: classify images with a saved model, one line per image."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import BadInputError
from ..parallel import resolve_jobs
from .errors import EXIT_BAD_INPUT, handle_errors


def _expand_inputs(inputs) -> list[Path]:
    """Files as given; folders walked recursively for image files, in sorted order."""
    from ..data import IMAGE_EXTENSIONS

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


@click.command("predict")
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

    from ..persistence import load_model
    from ..progress import plural, progress_bar

    if top_k < 1:
        raise BadInputError(f"--top-k must be at least 1, not {top_k}.")
    jobs = resolve_jobs(jobs)
    clf = load_model(model)
    paths = _expand_inputs(images)
    if not paths:
        raise BadInputError("No image files to classify; give image files or folders of images.")
    n_ok = n_bad = n_empty = 0
    # File names that are not UTF-8 (held as surrogates) go out as their own bytes, as ls
    # prints them, instead of stopping the output with a UnicodeEncodeError.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    bar = progress_bar(total=len(paths), desc="predict", unit="img", disable=quiet, leave=True)
    for pred in clf.predict_stream(paths, top_k=top_k, jobs=jobs):
        bar.update(1)
        if pred.error is None:
            n_ok += 1
            n_empty += pred.no_descriptors
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
    if n_empty:
        click.echo(
            f"warning: {plural(n_empty, 'image')} gave no dense SIFT descriptors (smaller than "
            "the model's SIFT bins): their predictions are the classifier's bias alone.",
            err=True,
        )
    if n_bad:
        click.echo(
            f"{plural(n_ok, 'image')} classified, {plural(n_bad, 'image')} could not be read.",
            err=True,
        )
    if n_ok == 0:
        sys.exit(EXIT_BAD_INPUT)
