"""Datasets: folder discovery, split protocols, list files, content hashes and manifests.

Length: one job, turning what the user points at into a checked train/test split; most of it
is the one-sentence refusals of the ways a dataset goes wrong.

Three layouts are understood:

* ``root/<class>/*.jpg`` -- one folder per class; a split protocol
  (``train_per_class``, ``test_per_class``, ``split_seed``) divides it.
* ``root/train/<class>/*`` and ``root/test/<class>/*`` -- the split is given.
* a list file, ``.csv`` or ``.txt``, of ``path,label`` lines (paths relative
  to the file), with an optional third column ``train``/``test``; without it
  the split protocol applies. Any other file is refused with one sentence: an
  image or a README given by mistake is not read as a list.

Every image gets a content hash (BLAKE2b of its bytes). The sorted list of
(hash, class, split) is the manifest, and its hash names the dataset in cache
keys: renaming a folder does not invalidate the cache, and changing one image
invalidates only what depends on that image.

Images are checked with the same rule that decodes them for extraction
(:func:`bovw.images.decode_checked`), so a dataset never holds an image that
extraction would refuse; decoding itself lives in :mod:`bovw.images`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# BadInputError is also re-exported: bovw.data.BadInputError.
from .errors import BadInputError
from .images import decode_checked, read_bytes
from .progress import plural

#: File extensions treated as images; anything else is skipped with a warning.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".bmp",
        ".dib",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".pgm",
        ".ppm",
        ".pbm",
        ".pnm",
        ".jp2",
    }
)

#: Extensions of list files (``path,label[,split]`` lines). Only these are read as
#: lists: ``bovw run photo.jpg`` or ``bovw run README.md`` is a mistake to name, not a
#: file to parse. ``.txt`` is kept because published splits often come as text lists.
LIST_EXTENSIONS = frozenset({".csv", ".txt"})


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes
    ----------
    path : Path
        Where the image is; not part of any cache key.
    label : int
        Index into :attr:`Dataset.classes`.
    digest : str
        Content hash of the file's bytes (hex BLAKE2b, 128 bit).
    """

    path: Path
    label: int
    digest: str


@dataclass
class Dataset:
    """A classification dataset with its train/test split.

    Attributes
    ----------
    classes : list of str
        Class names, sorted; labels index into this list.
    train, test : list of Sample
    root : Path
        The folder or list file it was loaded from.
    skipped : list of Path
        Files that were left out (not images, or undecodable with ``skip_bad``).
    """

    classes: list[str]
    train: list[Sample]
    test: list[Sample]
    root: Path
    skipped: list[Path] = field(default_factory=list)

    @property
    def manifest_hash(self) -> str:
        """Hash of the sorted (content hash, class name, split) triples."""
        h = hashlib.blake2b(digest_size=16)
        rows = sorted(
            [(s.digest, self.classes[s.label], "train") for s in self.train]
            + [(s.digest, self.classes[s.label], "test") for s in self.test]
        )
        for row in rows:
            h.update(("\t".join(row) + "\n").encode())
        return h.hexdigest()

    def split_hash(self, split: str) -> str:
        """Hash of one split's (content hash, class name) pairs, in dataset order."""
        h = hashlib.blake2b(digest_size=16)
        for s in getattr(self, split):
            h.update(f"{s.digest}\t{self.classes[s.label]}\n".encode())
        return h.hexdigest()

    def labels(self, split: str) -> np.ndarray:
        """Integer labels of ``split`` ("train" or "test")."""
        return np.array([s.label for s in getattr(self, split)], dtype=np.int64)

    def summary(self) -> str:
        """One line: classes and image counts."""
        return (
            f"{len(self.classes)} classes, {len(self.train)} train and "
            f"{len(self.test)} test images ({self.root})"
        )


# --------------------------------------------------------------------------- content hashes


def file_digest(data: bytes) -> str:
    """Content hash of a file's bytes: hex BLAKE2b with a 128-bit digest."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _inspect(path: Path) -> tuple[str, str | None]:
    """Content hash of a file and, if bovw refuses it, the error message."""
    data = read_bytes(path)
    digest = file_digest(data)
    try:
        decode_checked(data, path)
    except BadInputError as exc:
        return digest, str(exc)
    return digest, None


# --------------------------------------------------------------------------- discovery


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Image files under ``folder`` (recursively), the other files, and the folder links skipped.

    Links to folders inside a class folder are not followed: one such as
    ``Coast/loop -> ..`` would give every class's images the label Coast.
    ``folder`` itself may be a link (a class folder kept elsewhere), and links
    to files are kept: the same content under two labels is warned about by
    :func:`load_dataset`.
    """
    images, others, links = [], [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        links += [here / d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for name in sorted(filenames):
            p = here / name
            (images if _is_image(p) else others).append(p)
    return images, others, links


def _split_protocol(
    items: list[tuple[Path, str]],
    classes: list[str],
    train_per_class: int | None,
    test_per_class: int | None,
    split_seed: int,
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Per class, a random disjoint draw of train and test images."""
    rng = np.random.default_rng(split_seed)
    train, test = [], []
    for name in classes:
        members = sorted(p for p, c in items if c == name)
        order = rng.permutation(len(members))
        members = [members[i] for i in order]
        n_train = train_per_class if train_per_class is not None else (len(members) + 1) // 2
        if n_train + 1 > len(members):
            warnings.warn(
                f"Class {name!r} has only {plural(len(members), 'image')}, fewer than "
                f"{n_train} train + 1 test; it gets "
                f"{plural(max(len(members) - 1, 0), 'train image')}.",
                stacklevel=3,
            )
            n_train = max(len(members) - 1, 0)
        rest = members[n_train:]
        if test_per_class is not None:
            rest = rest[:test_per_class]
        train += [(p, name) for p in members[:n_train]]
        test += [(p, name) for p in rest]
    return train, test


def _check_list_file(path: Path) -> None:
    """Refuse a file that is not a list dataset, in one sentence naming it."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        raise BadInputError(
            f"{path} is an image, not a dataset: give the folder that holds the class folders "
            "(or a .csv list of 'path,label' lines)."
        )
    if suffix not in LIST_EXTENSIONS:
        raise BadInputError(
            f"{path} is not a dataset: give a folder of class folders, or a list of "
            "'path,label' lines in a .csv or .txt file."
        )


def _read_list_file(path: Path) -> list[tuple[Path, str, str | None]]:
    _check_list_file(path)
    try:
        # newline="": the csv module handles line ends itself (quoted fields may hold them).
        with path.open(newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise BadInputError(
            f"{path} is not UTF-8 text; save the list of 'path,label' lines as UTF-8."
        ) from None
    except OSError as exc:
        raise BadInputError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    rows = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if lineno == 1 and row[0].strip().lower() in ("path", "file", "filename"):
            continue
        if len(row) < 2:
            raise BadInputError(
                f"Line {lineno} of {path} has no label; write each line as 'path,label'."
            )
        split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else None
        if split not in (None, "train", "test"):
            raise BadInputError(
                f"Line {lineno} of {path} names split {row[2]!r}; use 'train' or 'test'."
            )
        p = Path(row[0].strip())
        rows.append(((p if p.is_absolute() else path.parent / p), row[1].strip(), split))
    return rows


def load_dataset(
    source: str | os.PathLike,
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    split_seed: int = 0,
    skip_bad: bool = False,
    n_jobs: int = 1,
) -> Dataset:
    """Discover a dataset, hash its images and split it.

    Parameters
    ----------
    source : path-like
        A folder of class folders, a folder with ``train/`` and ``test/``, or a
        CSV/text list of ``path,label[,split]`` lines.
    train_per_class, test_per_class : int, optional
        The split protocol for data that has no split of its own: per class,
        ``train_per_class`` random images for training and up to
        ``test_per_class`` of the rest for testing (default: half and the rest).
        For a given split they cap each class (first N in file order).
    split_seed : int
        Seed of the random split.
    skip_bad : bool
        Leave out images that cannot be decoded (with a warning) instead of
        raising.
    n_jobs : int
        Processes used to hash and check the images.

    Returns
    -------
    Dataset

    Raises
    ------
    BadInputError
        For a missing path, an empty dataset, fewer than two classes, or an
        undecodable image (unless ``skip_bad``).
    """
    root = Path(source)
    if not root.exists():
        raise BadInputError(f"Dataset {root} does not exist; give a folder of class folders.")
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if value is not None and value < 1:
            raise BadInputError(f"--{name.replace('_', '-')} must be at least 1, not {value}.")

    others: list[Path] = []
    links: list[Path] = []
    empty_folders: list[str] = []
    given_split: list[tuple[Path, str, str]] | None = None
    items: list[tuple[Path, str]] = []
    if root.is_file():
        rows = _read_list_file(root)
        if rows and all(split is not None for _, _, split in rows):
            given_split = [(p, c, s) for p, c, s in rows]  # type: ignore[misc]
        else:
            items = [(p, c) for p, c, _ in rows]
    elif (root / "train").is_dir() and (root / "test").is_dir():
        given_split = []
        for split in ("train", "test"):
            others += [p for p in (root / split).iterdir() if p.is_file()]
            for folder in _class_folders(root / split):
                images, junk, skipped_links = _list_files(folder)
                others += junk
                links += skipped_links
                given_split += [(p, folder.name, split) for p in images]
    else:
        for folder in _class_folders(root):
            images, junk, skipped_links = _list_files(folder)
            others += junk
            links += skipped_links
            items += [(p, folder.name) for p in images]
            if not images:
                empty_folders.append(folder.name)
        others += [p for p in root.iterdir() if p.is_file()]

    if others:
        shown = ", ".join(str(p) for p in others[:10])
        more = f" and {len(others) - 10} more" if len(others) > 10 else ""
        warnings.warn(
            f"Skipped {plural(len(others), 'file')} that "
            f"{'is not an image' if len(others) == 1 else 'are not images'}: {shown}{more}.",
            stacklevel=2,
        )

    if links:
        shown = ", ".join(str(p) for p in links[:10])
        more = f" and {len(links) - 10} more" if len(links) > 10 else ""
        warnings.warn(
            f"Did not follow {plural(len(links), 'link')} to "
            f"{'a folder' if len(links) == 1 else 'folders'} inside class folders: {shown}{more}; "
            "move or copy the images into the class folder if they belong to it.",
            stacklevel=2,
        )

    _check_classes(root, items if given_split is None else [(p, c) for p, c, _ in given_split])

    if given_split is not None:
        classes = sorted({c for _, c, s in given_split if s == "train"})
        train_items = [(p, c) for p, c, s in given_split if s == "train"]
        test_items = [(p, c) for p, c, s in given_split if s == "test"]
        if train_per_class is not None or test_per_class is not None:
            train_items = _cap_per_class(train_items, train_per_class)
            test_items = _cap_per_class(test_items, test_per_class)
        unknown = sorted({c for _, c in test_items} - set(classes))
        if unknown:
            raise BadInputError(
                f"Test classes {unknown} in {root} have no training images; "
                "add training images or remove them."
            )
        for name in classes:
            if not any(c == name for _, c in test_items):
                warnings.warn(f"Class {name!r} in {root} has no test images.", stacklevel=2)
    else:
        classes = sorted({c for _, c in items})
        train_items, test_items = (
            _split_protocol(items, classes, train_per_class, test_per_class, split_seed)
            if classes
            else ([], [])
        )

    empty_classes = empty_folders + [
        c for c in classes if not any(cc == c for _, cc in train_items)
    ]
    if empty_classes:
        warnings.warn(
            f"Classes with no training images are left out: {', '.join(empty_classes)}.",
            stacklevel=2,
        )
        classes = [c for c in classes if c not in empty_classes]
        test_items = [(p, c) for p, c in test_items if c in classes]
    if len(classes) < 2:
        # Two or more classes were found (_check_classes), but the split left fewer
        # with training images: the classes are too small for it.
        raise BadInputError(
            f"Dataset {root} has training images for {plural(len(classes), 'class', 'classes')}"
            f"{' (' + ', '.join(classes) + ')' if classes else ''}; classification needs two, "
            "so give each class at least two images (one to train on, one to test)."
        )

    paths = [p for p, _ in train_items] + [p for p, _ in test_items]
    results = _inspect_all(paths, n_jobs)
    index = {name: i for i, name in enumerate(classes)}
    skipped: list[Path] = list(others)
    bad: list[str] = []

    def build(pairs: Sequence[tuple[Path, str]], offset: int) -> list[Sample]:
        out = []
        for k, (p, c) in enumerate(pairs):
            digest, error = results[offset + k]
            if error is not None:
                bad.append(error)
                skipped.append(p)
                continue
            out.append(Sample(path=p, label=index[c], digest=digest))
        return out

    train = build(train_items, 0)
    test = build(test_items, len(train_items))
    if bad and not skip_bad:
        # The decoding messages give no flag advice (bovw predict has no --skip-bad);
        # here, where the flag exists, it is offered.
        more = f" ({plural(len(bad) - 1, 'more bad file')})" if len(bad) > 1 else ""
        raise BadInputError(
            f"{bad[0].rstrip('.')}, or pass --skip-bad to leave such images out{more}."
        )
    if bad:
        warnings.warn(
            f"Skipped {plural(len(bad), 'undecodable image')}: {'; '.join(bad[:5])}",
            stacklevel=2,
        )

    labels_of: dict[str, set[int]] = {}
    for s in train + test:
        labels_of.setdefault(s.digest, set()).add(s.label)
    clashes = [d for d, labels in labels_of.items() if len(labels) > 1]
    if clashes:
        example = {s.label: s.path for s in train + test if s.digest == clashes[0]}
        warnings.warn(
            f"{plural(len(clashes), 'image')} {'appears' if len(clashes) == 1 else 'appear'} "
            "under more than one class (same content), e.g. "
            f"{' and '.join(str(p) for p in list(example.values())[:2])}; "
            "check the class folders.",
            stacklevel=2,
        )
    leaked = {s.digest for s in train} & {s.digest for s in test}
    if leaked:
        warnings.warn(
            f"{plural(len(leaked), 'image')} {'appears' if len(leaked) == 1 else 'appear'} "
            "in both train and test (same content); "
            "test accuracy will be optimistic.",
            stacklevel=2,
        )
    return Dataset(classes=classes, train=train, test=test, root=root, skipped=skipped)


def _check_classes(root: Path, items: list[tuple[Path, str]]) -> None:
    """Refuse a dataset with no images or a single class, in the words of its layout."""
    classes = sorted({c for _, c in items})
    if root.is_file():
        if not items:
            raise BadInputError(f"{root} lists no images; write one 'path,label' line per image.")
        if len(classes) < 2:
            raise BadInputError(
                f"{root} lists images of one class ({classes[0]}); classification needs at "
                "least two, so give rows of another class in the label column."
            )
        return
    if not items:
        raise BadInputError(
            f"Dataset {root} has no images; put images in one folder per class "
            f"({root}/<class>/*.jpg)."
        )
    if len(classes) < 2:
        raise BadInputError(
            f"Dataset {root} has images of one class ({classes[0]}); classification needs at "
            "least two class folders."
        )


def _cap_per_class(items: list[tuple[Path, str]], cap: int | None) -> list[tuple[Path, str]]:
    if cap is None:
        return items
    counts: dict[str, int] = {}
    out = []
    for p, c in sorted(items):
        if counts.get(c, 0) < cap:
            counts[c] = counts.get(c, 0) + 1
            out.append((p, c))
    return out


def _inspect_all(paths: list[Path], n_jobs: int) -> list[tuple[str, str | None]]:
    """Hash and check every file; a file that cannot be read at all is an error."""

    def one(p: Path) -> tuple[str, str | None]:
        try:
            return _inspect(p)
        except BadInputError as exc:
            return "", str(exc)

    if n_jobs == 1 or len(paths) < 64:
        return [one(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    # Decoding releases the GIL inside OpenCV, so threads are enough here.
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(pool.map(one, paths))
