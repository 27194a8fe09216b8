"""``bovw words``: draw the image patches nearest to a sample of a run's visual words."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import BadInputError
from ..progress import plural
from .errors import handle_errors
from .options import Option


@click.command("words")
@click.argument("run_dir", type=click.Path())
@click.option(
    "--data",
    "data_path",
    type=click.Path(),
    help="Search the training images of this dataset.",
    cls=Option,
    default_text="the test images the run recorded",
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
    help="PNG to write.",
    cls=Option,
    default_text="RUN_DIR/visual_words.png",
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
    from ..data import load_dataset
    from ..persistence import load_model
    from ..visual_words import (
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
        f"Wrote {target} ({plural(len(wp.words), 'word')} x {plural(n_patches, 'patch', 'patches')}"
        f" from {plural(len(picked), 'image')})."
    )
