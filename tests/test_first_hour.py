"""What a new user meets first: the bare command, --jobs, progress in logs, a killed run."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import REPO, textured_image, write_image

from bovw.cli import main
from bovw.errors import BadInputError
from bovw.parallel import resolve_jobs
from bovw.progress import LineProgress, plural


def test_bare_bovw_shows_the_help_and_succeeds():
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 0 and "Commands:" in r.output and "run" in r.output


def test_jobs_follow_joblibs_convention():
    cores = os.cpu_count() or 1
    assert resolve_jobs(3) == 3
    assert resolve_jobs(-1) == cores
    with pytest.raises(BadInputError, match="-1 for one per core"):
        resolve_jobs(0)
    with pytest.raises(BadInputError):
        resolve_jobs(-cores - 1)
    r = CliRunner().invoke(main, ["extract", "--jobs", "0"])
    assert r.exit_code == 2 and "--jobs" in r.output


def test_line_progress_prints_a_line_per_tenth():
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="encode", unit="img", file=out)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].startswith("encode: 10% (100/1000 img") and lines[-1].startswith("encode: 100%")
    assert plural(1, "file") == "1 file" and plural(2, "image") == "2 images"


def many_images(root, n: int = 120, size: int = 160):
    for k in range(2):
        for i in range(n // 2):
            write_image(root / f"c{k}" / f"{i}.png", textured_image(k, 100 * k + i, size=size))
    return root


def test_progress_in_a_log_is_lines_not_redraws(tmp_path):
    data = many_images(tmp_path / "d", n=60, size=64)
    r = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "extract", str(data), "--cache-dir",
         str(tmp_path / "c"), "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("extract: ")]
    assert 2 <= len(progress) <= 11 and progress[-1].startswith("extract: 100%")


def test_kill_9_of_a_parallel_run_leaves_no_workers(tmp_path):
    data = many_images(tmp_path / "d", n=200, size=200)
    cmd = [sys.executable, str(REPO / "cli.py"), "extract", str(data), "--jobs", "2",
           "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--step", "2", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2 and any((tmp_path / "c" / "entries").glob("extract/*/*/*")):
            break
        time.sleep(0.2)
    assert proc.poll() is None and len(workers) >= 2, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_images_without_descriptors_are_counted_once(tiny_dataset, tmp_path):
    import warnings

    import numpy as np

    import bovw
    from bovw.config import Config

    for i, shape in enumerate([(1, 1), (3, 3), (1, 500)]):
        write_image(tiny_dataset / "test" / "alpha" / f"tiny{i}.png", np.full(shape, 90, np.uint8))
    config = Config().with_overrides(
        {"data.path": str(tiny_dataset), "sift.sizes": (6, 8), "sift.step": 6,
         "codebook.words": 24, "codebook.samples": 20000, "encoding.encoding": "soft",
         # Kept at their size: the default min_side enlarges the 1 x 1 and 3 x 3 images to
         # 64 px, where they have descriptors (the 1 x 500 strip stays without any).
         "sift.min_side": 0}
    )  # fmt: skip
    for _ in range(2):  # a miss, then a hit: warned both times
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bovw.run(config, cache_dir=tmp_path / "c", progress=False)
        empty = [str(w.message) for w in caught if "no dense SIFT descriptors" in str(w.message)]
        assert len(empty) == 1 and empty[0].startswith("3 images of the test split")


def test_cnn_evaluate_takes_a_compare_run_folder(tiny_dataset, tmp_path):
    pytest.importorskip("torch")
    from conftest import FAST

    out = tmp_path / "run"
    tiny_cnn = ["--cnn-epochs", "1", "--cnn-widths", "8,16", "--cnn-image-size", "32"]
    r = CliRunner().invoke(
        main,
        ["compare", str(tiny_dataset), *FAST, *tiny_cnn, "--out", str(out),
         "--cache-dir", str(tmp_path / "c")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["cnn", "evaluate", str(out), str(tiny_dataset)])
    assert r.exit_code == 0, r.output
    assert "mean class accuracy" in r.output


def test_compare_says_cached_draws_honest_bars_and_writes_markdown(tmp_path):
    from bovw.compare import comparison_markdown, comparison_rows, plot_comparison
    from bovw.data import Dataset

    figures = {
        "BoVW": {"mean_class_accuracy": 0.9, "train_seconds": 0.8, "train_cached": True,
                 "parameters": 344_000, "flops_per_image": 1e6,
                 "inference_images_per_second": 50.0},
        "CNN": {"mean_class_accuracy": 0.8, "train_seconds": 300.0, "parameters": 394_000,
                "flops_per_image": 2e8, "inference_images_per_second": 400.0},
    }  # fmt: skip
    rows = {row[0]: row[1:] for row in comparison_rows(figures)}
    assert rows["training seconds"] == ["0.8 (cached)", "300.0"]
    fig = plot_comparison(figures, tmp_path / "compare.png")
    for ax in fig.axes:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    md = comparison_markdown(figures, Dataset(classes=["a"], train=[], test=[], root=tmp_path))
    assert "``" not in md and ":mod:" not in md and "`bovw.cnn.summary`" in md


# --------------------------------------------------------------------------- datasets given by mistake


def test_an_image_or_a_readme_is_not_read_as_a_dataset_list(tiny_dataset, tmp_path):
    image = tiny_dataset / "train" / "alpha" / "0.png"
    jpeg = write_image(tmp_path / "photo.jpg", textured_image(0, 1))
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n\nimages -> dense SIFT, one vector per image, with a split\n")
    for given, says in [
        (image, "is an image, not a dataset: give the folder that holds the class folders"),
        (jpeg, "is an image, not a dataset"),
        (readme, "is not a dataset: give a folder of class folders, or a list of"),
    ]:
        r = CliRunner().invoke(main, ["run", str(given), "--cache-dir", str(tmp_path / "c")])
        assert r.exit_code == 2, r.output
        error = [line for line in r.output.splitlines() if line.startswith("Error: ")]
        assert len(error) == 1 and says in error[0] and str(given) in error[0]
        assert "UnicodeDecodeError" not in r.output and "Line " not in r.output

    # A .txt list is read as a .csv one is; a list that is not UTF-8 is one sentence.
    from bovw.data import load_dataset

    rows = [f"train/{c}/{i}.png,{c}" for c in ("alpha", "beta") for i in range(3)]
    (tiny_dataset / "list.txt").write_text("\n".join(rows) + "\n")
    assert load_dataset(tiny_dataset / "list.txt").classes == ["alpha", "beta"]
    (tiny_dataset / "latin.csv").write_bytes("train/alpha/0.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(BadInputError, match="latin.csv is not UTF-8 text"):
        load_dataset(tiny_dataset / "latin.csv")


def test_a_one_class_list_gets_one_message_about_the_list(tiny_dataset, tmp_path):
    import warnings

    from bovw.data import load_dataset

    for n_rows in (1, 3):
        listing = tmp_path / f"one{n_rows}.csv"
        listing.write_text(
            "".join(f"{tiny_dataset}/train/alpha/{i}.png,alpha\n" for i in range(n_rows))
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(BadInputError) as exc:
                load_dataset(listing)
        # Formerly: a warning that the class gets 0 train images, then "has no images;
        # put images in one folder per class (one1.csv/<class>/*.jpg)".
        assert not caught, [str(w.message) for w in caught]
        message = str(exc.value)
        assert "lists images of one class (alpha)" in message
        assert "folder" not in message and "<class>" not in message


# --------------------------------------------------------------------------- messages


def test_decode_errors_advise_a_flag_only_where_it_exists(tiny_dataset, tmp_path):
    from conftest import FAST

    from bovw.data import load_dataset
    from bovw.images import decode_image

    broken = b"\x89PNG\r\n\x1a\n garbage"
    with pytest.raises(BadInputError) as exc:
        decode_image(broken, "x.png")
    assert "--skip-bad" not in str(exc.value)

    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["run", str(tiny_dataset), *FAST, "--out", str(out), "--cache-dir", str(tmp_path / "c")],
    )
    assert r.exit_code == 0, r.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(broken)
    r = CliRunner().invoke(main, ["predict", str(out), str(tmp_path / "bad"), "-q"])
    assert r.exit_code == 2 and "broken.png" in r.output
    assert "--skip-bad" not in r.output  # bovw predict has no such flag
    assert "0 images classified, 1 image could not be read." in r.output

    # Where the flag exists (the dataset commands), it is offered, and the counts agree.
    for name in ("broken.png", "broken2.png"):
        (tiny_dataset / "train" / "alpha" / name).write_bytes(broken)
    with pytest.raises(BadInputError, match=r"or pass --skip-bad .*\(1 more bad file\)\.$"):
        load_dataset(tiny_dataset)
    (tiny_dataset / "train" / "alpha" / "broken2.png").unlink()
    (tiny_dataset / "train" / "alpha" / "notes.md").write_text("not an image")
    with pytest.warns(UserWarning) as record:
        load_dataset(tiny_dataset, skip_bad=True)
    messages = [str(w.message) for w in record]
    assert any(m.startswith("Skipped 1 file that is not an image: ") for m in messages)
    assert any(m.startswith("Skipped 1 undecodable image: ") for m in messages)


# --------------------------------------------------------------------------- codebook progress


@pytest.mark.parametrize("family", ["kmeans", "gmm"])
def test_codebook_fitting_shows_progress_and_fits_the_same_bits(family, capsys):
    import numpy as np

    from bovw.vocabulary import GMMVocabulary, KMeansCodebook

    rng = np.random.default_rng(0)
    sets = [rng.integers(0, 256, (400, 32), dtype=np.uint8) for _ in range(25)]
    if family == "kmeans":
        # A small batch so that MiniBatchKMeans takes many steps; 4 epochs asked.
        make = lambda: KMeansCodebook(n_words=16, batch_size=256, max_iter=4)  # noqa: E731
        arrays = lambda v: [v.centers_]  # noqa: E731
        desc = "codebook: k-means: "
    else:
        make = lambda: GMMVocabulary(n_components=6, n_pca=8, max_iter=30)  # noqa: E731
        arrays = lambda v: [v.weights_, v.means_, v.variances_]  # noqa: E731
        desc = "codebook: GMM (EM): "
    quiet = make().fit(sets)
    assert capsys.readouterr().err == ""
    shown = make().fit(sets, progress=True)
    err = capsys.readouterr().err
    for a, b in zip(arrays(quiet), arrays(shown), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    # stderr is not a terminal here: lines, not redraws, and the last one at 100%.
    lines = [line for line in err.splitlines() if line.startswith(desc)]
    assert "\r" not in err and len(lines) >= 3, err
    assert lines[-1].startswith(desc + "100%")
    percents = [int(line[len(desc) :].split("%")[0]) for line in lines]
    assert percents == sorted(percents)


def test_the_codebook_stage_of_a_run_reports_progress(tiny_dataset, tmp_path):
    from conftest import FAST

    fast = [a for a in FAST if a != "-q"]
    r = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "codebook", str(tiny_dataset), *fast,
         "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "codebook: k-means: 100%" in r.stderr


# --------------------------------------------------------------------------- the CNN commands


def test_a_finished_cnn_run_is_refused_in_one_sentence_and_restarts(tiny_dataset, tmp_path):
    import json

    pytest.importorskip("torch")
    out = tmp_path / "cnn"
    tiny = ["--cnn-widths", "8,16", "--cnn-image-size", "32", "--out", str(out), "-q"]
    r = CliRunner().invoke(main, ["cnn", "train", str(tiny_dataset), "--cnn-epochs", "2", *tiny])
    assert r.exit_code == 0, r.output
    # Formerly a ValueError and exit 1, with no way to start afresh in that folder.
    r = CliRunner().invoke(main, ["cnn", "train", str(tiny_dataset), "--cnn-epochs", "4", *tiny])
    assert r.exit_code == 2, r.output
    error = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and "--restart" in error[0] and str(out) in error[0]
    assert "ValueError" not in r.output
    r = CliRunner().invoke(
        main, ["cnn", "train", str(tiny_dataset), "--cnn-epochs", "4", "--restart", *tiny]
    )
    assert r.exit_code == 0, r.output
    assert len(json.loads((out / "cnn.json").read_text())["history"]) == 4


def test_cnn_summary_describes_what_training_builds_with_the_same_flags(tiny_dataset, tmp_path):
    import json

    pytest.importorskip("torch")
    flags = ["--cnn-widths", "8,16", "--cnn-image-size", "32"]
    out = tmp_path / "cnn"
    r = CliRunner().invoke(
        main,
        ["cnn", "train", str(tiny_dataset), *flags, "--cnn-epochs", "1", "--out", str(out), "-q"],
    )
    assert r.exit_code == 0, r.output
    trained = json.loads((out / "metrics.json").read_text())["cnn"]["parameters"]
    r = CliRunner().invoke(main, ["cnn", "summary", str(tiny_dataset), *flags])
    assert r.exit_code == 0, r.output
    assert f"{trained:,}" in r.stdout  # 3 classes, 2 blocks: the trained network's count
    # By default: the network `bovw compare` trains on the demo data (5 blocks, 5 classes),
    # not a 4-block, 15-class one.
    r = CliRunner().invoke(main, ["cnn", "summary"])
    assert r.exit_code == 0, r.output
    assert "5 blocks of widths 16,32,64,128,256, 64 px crops" in r.stderr
    assert "5 classes" in r.stderr
    # One naming: the --cnn- flags everywhere, the unprefixed ones nowhere.
    r = CliRunner().invoke(main, ["cnn", "summary", "--widths", "16"])
    assert r.exit_code == 2 and "No such option" in r.output
    for command in (["cnn", "train"], ["cnn", "summary"], ["compare"], ["run"]):
        help_text = CliRunner().invoke(main, [*command, "--help"]).output
        assert "--cnn-widths" in help_text and "--cnn-image-size" in help_text
        assert "--widths" not in help_text.replace("--cnn-widths", "")


def test_cnn_evaluate_is_quiet_with_q_and_the_readme_states_the_device_default(
    tiny_dataset, tmp_path
):
    pytest.importorskip("torch")
    out = tmp_path / "cnn"
    tiny = ["--cnn-widths", "8,16", "--cnn-image-size", "32", "--cnn-epochs", "1"]
    r = CliRunner().invoke(main, ["cnn", "train", str(tiny_dataset), *tiny, "--out", str(out)])
    assert r.exit_code == 0, r.output
    loud = CliRunner().invoke(main, ["cnn", "evaluate", str(out), str(tiny_dataset)])
    quiet = CliRunner().invoke(main, ["cnn", "evaluate", str(out), str(tiny_dataset), "-q"])
    assert loud.exit_code == quiet.exit_code == 0, quiet.output
    assert "cnn evaluate: decoding test images: 100%" in loud.stderr
    assert quiet.stderr == ""

    def accuracy(result):
        return [line for line in result.stdout.splitlines() if "accuracy" in line]

    assert accuracy(quiet) == accuracy(loud) and len(accuracy(quiet)) == 2

    # The README says what --device does by default, as the code does it: auto.
    readme = (REPO / "README.md").read_text()
    assert "CPU is the\ndefault path" not in readme and "CPU is the default path" not in readme
    assert "`--device auto` (the default)" in readme
    for command in (["cnn", "train"], ["cnn", "evaluate"], ["compare"]):
        help_text = CliRunner().invoke(main, [*command, "--help"]).output
        assert "[default: auto]" in help_text
