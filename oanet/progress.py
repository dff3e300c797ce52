"""Progress reporting that suits both a terminal and a log file. No torch here.

On a terminal a tqdm bar; anywhere else (CI, SLURM logs, ``| tee``) one plain line every
``interval`` seconds and one at the end, instead of a carriage-return update per item that turns a
log into one enormous line. ``OANET_PROGRESS_INTERVAL`` (seconds, default 30) sets the interval.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO

DEFAULT_INTERVAL = 30.0


def _interval_from_env() -> float:
    raw = os.environ.get("OANET_PROGRESS_INTERVAL", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A progress counter: ``update(n)``, ``set_postfix(**values)``, ``close()`` (or ``with``).

    ``disable`` silences it; ``interval`` overrides the environment's seconds between log lines;
    ``tty`` forces one mode or the other (default: whether ``file`` is a terminal).
    """

    def __init__(
        self,
        total: Optional[int] = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        file: Optional[TextIO] = None,
        disable: bool = False,
        interval: Optional[float] = None,
        tty: Optional[bool] = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self._initial = initial
        self.file = file if file is not None else sys.stderr
        self.disable = disable
        self.interval = _interval_from_env() if interval is None else interval
        self._postfix: dict[str, Any] = {}
        self._start = self._last = time.perf_counter()
        self._bar = None
        self._closed = False
        if disable:
            return
        is_tty = tty if tty is not None else bool(getattr(self.file, "isatty", lambda: False)())
        if is_tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=self.file, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self.line())

    def set_postfix(self, **values: Any) -> None:
        self._postfix = values
        if self._bar is not None:
            self._bar.set_postfix(refresh=False, **values)

    def line(self, done: bool = False) -> str:
        """The log line for the current state (also what the final line says)."""
        elapsed = time.perf_counter() - self._start
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        parts.append(f"{rate:.2f} {self.unit}/s" if rate < 10 else f"{rate:.0f} {self.unit}/s")
        parts.append(f"{'done in' if done else 'elapsed'} {_clock(elapsed)}")
        if not done and self.total is not None and rate > 0:
            parts.append(f"eta {_clock((self.total - self.n) / rate)}")
        parts += [f"{key}={value}" for key, value in self._postfix.items()]
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif not self.disable and self.n > self._initial:
            self._write(self.line(done=True))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable, total: Optional[int] = None, desc: str = "", unit: str = "it",
          disable: bool = False, **kwargs: Any) -> Iterator:
    """Iterate ``iterable`` while reporting progress (the total is ``len(iterable)`` when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total=total, desc=desc, unit=unit, disable=disable, **kwargs) as progress:
        for item in iterable:
            yield item
            progress.update(1)
