"""The cache folder: verified, atomic entries of plain data, and the marker that makes it bovw's.

Length: one on-disk format with its atomic, verified writes and reads.

Layout under the cache root::

    CACHEDIR.TAG                          the marker (the standard cache-directory tag)
    entries/<stage>/r<revision>/<k[:2]>/<key>/
        meta.json                         written last: what the entry is, its checksums
        a0.npy, a1.npy.zst, ...           the arrays of the value (see bovw.cache.codec)
    tmp/                                  entries being written, and entries being deleted

An entry is written in ``tmp/`` and renamed into place in one step, so a reader
sees a whole entry or none, and a killed writer leaves only a ``tmp/`` folder
that the next prune removes. ``meta.json`` holds the SHA-256 of every array
file and of its own body; a read checks all of them, and any mismatch, a
missing file, or an entry that describes another key (a foreign entry) makes
the read fail as *corrupt*: the entry is moved away and the stage recomputes.
Arrays are read with ``allow_pickle=False`` semantics (object dtypes refused)
and rebuilt by :mod:`bovw.cache.codec`, so nothing read from the cache runs code.

Readers hold a shared ``flock`` on ``meta.json`` while they read, and prune takes
an exclusive one before it deletes, so an entry being read is never deleted
under its reader. Every read also refreshes the entry's modification time: that
is the "last used" time of the least-recently-used eviction.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from . import codec

#: The marker file at the cache root. Its first line is the signature of the
#: Cache Directory Tagging Specification, so backup tools skip the folder too.
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by bovw.\n"
    "# 'bovw cache clear' and 'bovw cache prune' act only on folders that hold it.\n"
)
ENTRIES = "entries"
TMP = "tmp"
#: What older bovw versions wrote at the root (joblib pickles): never read, deleted by clear.
LEGACY = ("joblib",)
META = "meta.json"
FORMAT = "bovw-cache-entry/1"
#: Entries whose ``meta.json`` is larger than this are not bovw's.
MAX_META_BYTES = 64 * 2**20

#: How array files are compressed: "none" or "zlib" (always available), "lz4" or
#: "zstd" (when the ``lz4`` / ``zstandard`` packages are installed); chosen with
#: ``$BOVW_CACHE_COMPRESS``. The default is "none": on 15-Scene descriptors zstd saves
#: a third of the bytes but adds a quarter to extraction and doubles read time, which
#: a cache with a size cap pays on every run (benchmarks/RESULTS.md, "Cache: compression").
COMPRESSORS = ("none", "zlib", "lz4", "zstd")
#: Arrays smaller than this are stored raw: compressing them saves nothing worth the time.
COMPRESS_MIN_BYTES = 4096


class CacheError(BadInputError):
    """The cache folder cannot be used (not bovw's, not writable)."""


class CorruptEntry(Exception):
    """An entry failed verification; the message says why."""


# --------------------------------------------------------------------------- compression


def _compressor(name: str):
    """``(compress(bytes) -> bytes, decompress(bytes) -> bytes)`` for a compressor name."""
    if name == "zlib":
        return (lambda b: zlib.compress(b, 1)), zlib.decompress
    if name == "lz4":
        import lz4.frame

        return lz4.frame.compress, lz4.frame.decompress
    if name == "zstd":
        import zstandard

        # Level 1: 0.63 of the size at half the time of level 3 (benchmarks/RESULTS.md).
        compress = zstandard.ZstdCompressor(level=1).compress
        return compress, zstandard.ZstdDecompressor().decompress
    raise ValueError(f"unknown compressor {name!r}; use one of {', '.join(COMPRESSORS)}")


def available_compressors() -> list[str]:
    """The compressors usable here ("none" and "zlib" always)."""
    out = ["none", "zlib"]
    for name, module in (("lz4", "lz4.frame"), ("zstd", "zstandard")):
        try:
            __import__(module)
        except ImportError:
            continue
        out.append(name)
    return out


# --------------------------------------------------------------------------- arrays as files


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _npy_from_buffer(data: bytearray | bytes) -> np.ndarray:
    """Parse ``.npy`` bytes without a copy of the data; object dtypes are refused."""
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise CorruptEntry(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise CorruptEntry("an array of Python objects (a pickle)")
    count = int(np.prod(shape, dtype=np.int64))
    offset = stream.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise CorruptEntry(f"array data of {len(data) - offset} bytes for shape {shape}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


#: Memory-mapped files this process has verified: path -> (inode, size, mtime, digest).
#: Streaming training reads every shard once per epoch; hashing it again each time
#: would cost as much as reading it. A file replaced or rewritten since (another
#: inode, size or mtime) is verified again.
_VERIFIED: dict[str, tuple[int, int, int, str]] = {}


def _mapped_npy(file: Path, digest: str) -> np.ndarray:
    """A verified ``.npy`` file, memory-mapped read-only (its checksum streamed first,
    once per process and version of the file)."""
    st = file.stat()
    signature = (st.st_ino, st.st_size, st.st_mtime_ns, digest)
    if _VERIFIED.get(str(file)) != signature:
        h = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(8 * 2**20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise CorruptEntry(f"checksum mismatch in {file.name}")
        _VERIFIED[str(file)] = signature
    try:
        return np.load(file, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # a pickle (object array), or a header that lies
        raise CorruptEntry(f"{file.name} is not a valid .npy file ({exc})") from None


# --------------------------------------------------------------------------- the store


@dataclass
class EntryInfo:
    """One entry on disk, as prune and info see it."""

    path: Path
    stage: str
    revision: str
    size: int
    last_used: float


class CacheStore:
    """The entries of one cache folder.

    Parameters
    ----------
    root : path-like
        The cache folder. Created (with its marker) when missing or empty; an
        existing non-empty folder must hold the marker.
    compress : str
        Compressor of array files written from now on (reading handles any).

    Attributes
    ----------
    full : str or None
        Set when a write failed for lack of space: the one-sentence warning.
        Later writes are skipped (the run goes on uncached).
    """

    def __init__(self, root: str | os.PathLike, *, compress: str = "none"):
        self.root = Path(root)
        if compress not in COMPRESSORS:
            raise ValueError(f"compress must be one of {', '.join(COMPRESSORS)}, not {compress!r}")
        self.compress = compress
        self.full: str | None = None

    # -- the folder ------------------------------------------------------------------

    def open(self) -> CacheStore:
        """Create the folder and its marker if needed; refuse a folder that is not bovw's.

        Returns ``self``. Raises :class:`CacheError` with one sentence otherwise.
        """
        root = self.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not (root / MARKER).is_file():
                foreign = [p.name for p in root.iterdir() if p.name not in LEGACY]
                if foreign:
                    raise CacheError(
                        f"Cache folder {root} is not empty and is not a bovw cache (no {MARKER}); "
                        "pass an empty or new folder with --cache-dir or BOVW_CACHE_DIR."
                    )
                _write_atomic(root / MARKER, MARKER_TEXT.encode())
            (root / ENTRIES).mkdir(exist_ok=True)
            (root / TMP).mkdir(exist_ok=True)
            probe = root / TMP / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except CacheError:
            raise
        except OSError as exc:
            raise CacheError(
                f"Cannot use cache folder {root}: {exc.strerror or exc}; "
                "pass --cache-dir or set BOVW_CACHE_DIR to a writable folder."
            ) from None
        return self

    def is_bovw_cache(self) -> bool:
        """Whether the folder holds bovw's marker."""
        return is_bovw_cache(self.root)

    # -- entries ---------------------------------------------------------------------

    def entry_path(self, stage: str, revision: int | str, key: str) -> Path:
        return self.root / ENTRIES / stage / f"r{revision}" / key[:2] / key

    def contains(self, stage: str, revision: int | str, key: str) -> bool:
        """Whether an entry exists (not whether it verifies: :meth:`read` tells that)."""
        return (self.entry_path(stage, revision, key) / META).is_file()

    def read(self, stage: str, revision: int | str, key: str, *, mmap: bool = False) -> Any:
        """The value of an entry, verified.

        With ``mmap``, uncompressed arrays come back memory-mapped (read-only)
        instead of read into memory: their checksum is verified by streaming the
        file first, so a large shard of features costs its pages as they are used,
        not its size up front. A mapping stays valid if the entry is later pruned.

        Raises
        ------
        KeyError
            No such entry.
        CorruptEntry
            The entry exists but does not verify; it has been moved out of the way.
        """
        path = self.entry_path(stage, revision, key)
        try:
            with _locked(path / META, shared=True) as meta_file:
                if meta_file is None:
                    raise KeyError(key)
                value = self._read_locked(path, meta_file, stage, str(revision), key, mmap)
                with contextlib.suppress(OSError):
                    os.utime(path / META)  # last used, for the LRU eviction
                return value
        except CorruptEntry:
            self.discard(path)
            raise

    def _read_locked(
        self, path: Path, meta_file, stage: str, revision: str, key: str, mmap: bool = False
    ) -> Any:
        raw = meta_file.read(MAX_META_BYTES + 1)
        if len(raw) > MAX_META_BYTES:
            raise CorruptEntry(f"{META} is over {MAX_META_BYTES // 2**20} MiB")
        try:
            outer = json.loads(raw)
            body_text = outer["body"]
            if outer.get("format") != FORMAT:
                raise CorruptEntry(f"not a {FORMAT} entry")
            if hashlib.sha256(body_text.encode()).hexdigest() != outer["sha256"]:
                raise CorruptEntry(f"checksum mismatch in {META}")
            body = json.loads(body_text)
        except CorruptEntry:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise CorruptEntry(f"{META} is not a valid entry description") from None
        if (body.get("stage"), str(body.get("revision")), body.get("key")) != (
            stage,
            revision,
            key,
        ):
            raise CorruptEntry("a foreign entry (it describes another stage or key)")
        arrays = {}
        files = body.get("files")
        if not isinstance(files, dict):
            raise CorruptEntry(f"{META} lists no files")
        for name, spec in files.items():
            arrays[name] = self._read_array(path, name, spec, mmap)
        try:
            return codec.decode(body.get("value"), arrays)
        except codec.CodecError as exc:
            raise CorruptEntry(f"the value cannot be rebuilt: {exc}") from None

    def _read_array(self, path: Path, name: str, spec: Any, mmap: bool = False) -> np.ndarray:
        try:
            filename, size, digest, compressor = (
                spec["file"],
                int(spec["bytes"]),
                spec["sha256"],
                spec["compress"],
            )
        except (KeyError, TypeError, ValueError):
            raise CorruptEntry(f"{META} describes array {name!r} badly") from None
        if "/" in filename or filename.startswith("."):
            raise CorruptEntry(f"file name {filename!r} outside the entry")
        file = path / filename
        try:
            actual = file.stat().st_size
            if actual != size:
                raise CorruptEntry(f"{filename} has {actual} bytes, {size} expected (truncated?)")
            if mmap and compressor == "none":
                return _mapped_npy(file, digest)
            data = bytearray(size)
            with open(file, "rb") as f:
                if f.readinto(data) != size:
                    raise CorruptEntry(f"{filename} could not be read whole")
        except FileNotFoundError:
            raise CorruptEntry(f"{filename} is missing") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptEntry(f"checksum mismatch in {filename}")
        if compressor != "none":
            try:
                data = bytearray(_compressor(compressor)[1](bytes(data)))
            except Exception as exc:  # noqa: BLE001 - any decompression failure is corruption
                raise CorruptEntry(f"{filename} does not decompress ({exc})") from None
        try:
            return _npy_from_buffer(data)
        except ValueError as exc:
            raise CorruptEntry(f"{filename} is not a valid .npy file ({exc})") from None

    def write(
        self,
        stage: str,
        revision: int | str,
        key: str,
        value: Any,
        inputs: Any = None,
    ) -> bool:
        """Store ``value`` as the entry of ``key``; return whether it was stored.

        Not stored: when the cache is full (``self.full`` then says so; nothing
        partial is left behind) or when another process stored the same entry
        first (theirs is kept: it is the same value).
        """
        if self.full is not None:
            return False
        tree, arrays = codec.encode(value)
        final = self.entry_path(stage, revision, key)
        work = self.root / TMP / f"w-{uuid.uuid4().hex}"
        needed = 0
        try:
            work.mkdir(parents=True)
            files = {}
            for name, array in arrays.items():
                data = _npy_bytes(array)
                compressor = "none"
                if self.compress != "none" and len(data) >= COMPRESS_MIN_BYTES:
                    packed = _compressor(self.compress)[0](data)
                    if len(packed) < len(data):
                        data, compressor = packed, self.compress
                filename = f"{name}.npy" + ("" if compressor == "none" else f".{compressor}")
                needed += len(data)
                (work / filename).write_bytes(data)
                files[name] = {
                    "file": filename,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "compress": compressor,
                }
            body = {
                "stage": stage,
                "revision": str(revision),
                "key": key,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "inputs": inputs,
                "files": files,
                "value": tree,
            }
            body_text = json.dumps(body, sort_keys=True, allow_nan=False)
            outer = {
                "format": FORMAT,
                "sha256": hashlib.sha256(body_text.encode()).hexdigest(),
                "body": body_text,
            }
            meta = json.dumps(outer).encode()
            needed += len(meta)
            (work / META).write_bytes(meta)  # written last: the entry's checksums
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(work, final)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False  # another process stored it first
                raise
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.full = (
                    f"The cache folder {self.root} is full: storing a {stage} entry of about "
                    f"{human_size(max(needed, 1))} failed (no space left on the device); this run "
                    "goes on without caching. Free space with 'bovw cache prune --max-size SIZE'."
                )
                return False
            raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def discard(self, path: Path) -> None:
        """Move an entry out of the way (then delete it); a reader holding it keeps its files."""
        trash = self.root / TMP / f"d-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # -- maintenance -------------------------------------------------------------------

    def entries(self) -> Iterator[EntryInfo]:
        """Every entry on disk, with its size and last use (no verification)."""
        base = self.root / ENTRIES
        if not base.is_dir():
            return
        for stage_dir in _subdirs(base):
            for rev_dir in _subdirs(stage_dir):
                for prefix in _subdirs(rev_dir):
                    for entry in _subdirs(prefix):
                        size, last = 0, 0.0
                        for f in _files(entry):
                            st = f.stat()
                            size += st.st_size
                            if f.name == META:
                                last = st.st_mtime
                        yield EntryInfo(entry, stage_dir.name, rev_dir.name[1:], size, last)

    def evict(self, entry: EntryInfo) -> bool:
        """Delete one entry unless a reader holds it; return whether it was deleted."""
        meta = entry.path / META
        try:
            f = open(meta, "rb")
        except OSError:
            self.discard(entry.path)  # no meta.json: a broken entry, nobody can read it
            return True
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # being read right now
            self.discard(entry.path)
        return True

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Delete leftovers in ``tmp/`` (killed writers) older than ``older_than`` seconds."""
        freed = 0
        now = time.time()
        tmp = self.root / TMP
        if not tmp.is_dir():
            return 0
        for child in tmp.iterdir():
            try:
                if now - child.stat().st_mtime < older_than:
                    continue
            except OSError:
                continue
            freed += _tree_size(child)
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        return freed


# --------------------------------------------------------------------------- helpers


def is_bovw_cache(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds bovw's marker file."""
    marker = Path(root) / MARKER
    try:
        return marker.is_file() and "created by bovw" in marker.read_text(errors="replace")
    except OSError:
        return False


@contextlib.contextmanager
def _locked(path: Path, *, shared: bool):
    """``path`` opened for reading under a flock (``None`` when it does not exist)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        yield None
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield f


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _files(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_file()]
    except OSError:
        return []


def _tree_size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def human_size(n: float) -> str:
    """Bytes for people: ``"512 B"``, ``"1.5 MiB"``, ``"11.1 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
