"""Progress bars that suit where they are written.

On a terminal, a tqdm bar that redraws itself. Written to a file or a pipe (a
log, CI, ``nohup``), a redrawing bar leaves one line per update, thousands of
``\\r`` pieces for a long stage; there, :class:`LineProgress` prints one line
per tenth of the work and one at the end instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class LineProgress:
    """A progress report of whole lines: ``desc: 30% (300/1000 img, 12.1 s)``.

    Parameters
    ----------
    total : int
        Units of work expected.
    desc : str
    unit : str
    step : float
        Print a line each time this fraction of the work is passed.
    file : text file, default sys.stderr
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        step: float = 0.1,
        file: TextIO | None = None,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc
        self.unit = unit
        self.step = step
        self.file = file if file is not None else sys.stderr
        self.n = 0
        self._next = step
        self._start = time.perf_counter()
        self._closed = False

    def _line(self) -> str:
        seconds = time.perf_counter() - self._start
        if self.total:
            return (
                f"{self.desc}: {int(100 * self.n / self.total)}% "
                f"({self.n}/{self.total} {self.unit}, {seconds:.1f} s)"
            )
        return f"{self.desc}: {self.n} {self.unit} ({seconds:.1f} s)"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self.n < self.total and self.n / self.total >= self._next:
            while self.n / self.total >= self._next:
                self._next += self.step
            print(self._line(), file=self.file, flush=True)

    def write(self, line: str, file: TextIO | None = None) -> None:
        """Print a line of output (tqdm's ``write``: the bar is not in the way here)."""
        print(line, file=file if file is not None else self.file, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            print(self._line(), file=self.file, flush=True)

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def plural(n: int, word: str, words: str | None = None) -> str:
    """``"1 image"``, ``"2 images"``: a count with its noun."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = False,
    file: TextIO | None = None,
):
    """A tqdm bar on a terminal, a :class:`LineProgress` on a file or pipe, nothing if disabled."""
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    if disable or stream.isatty():
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=stream
        )
    return LineProgress(iterable, total=total, desc=desc, unit=unit, file=stream)


@contextmanager
def watch_calls(obj: Any, method: str, on_call: Callable[[], object]) -> Iterator[None]:
    """Within the block, call ``on_call()`` each time ``obj.method`` is called.

    For progress through a library loop that has no callback but calls one of
    its estimator's methods once per iteration (scikit-learn's MiniBatchKMeans
    and GaussianMixture). The method is shadowed on this one instance by a
    wrapper that calls ``on_call`` and returns what the original returns, so
    the computation is untouched; the wrapper is removed on exit, so the object
    pickles as before. Should a library release rename the method, the wrapper
    is never called: no progress, the same results.
    """
    original = getattr(obj, method, None)
    if original is None:
        yield
        return

    def watched(*args, **kwargs):
        on_call()
        return original(*args, **kwargs)

    setattr(obj, method, watched)
    try:
        yield
    finally:
        obj.__dict__.pop(method, None)
