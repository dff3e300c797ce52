"""Worker counts and an ordered thread map. No torch here (``oanet pq``, ``oanet synth``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask under Linux, e.g. a SLURM or cgroup
    allocation), else all the machine's; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def ordered_thread_map(
    function: Callable[[Any], Any], items: Sequence, workers: int, chunk: int = 1, name: str = "oanet"
) -> Iterator:
    """``map(function, items)`` computed by ``workers`` threads, ``chunk`` items per task, yielded in the
    order of ``items``: a caller that sums the values gets the same bits for any number of workers. An
    exception in ``function`` is raised here when its item's turn comes; no chunk starts after that, and
    the threads are joined when the iteration ends (or the generator is closed)."""
    n_chunks = -(-len(items) // chunk)
    results: list = [None] * n_chunks  # per chunk: (True, [values]) or (False, exception)
    finished = [threading.Event() for _ in range(n_chunks)]
    state = {"next": 0, "end": n_chunks}  # the next chunk to hand out, and where to stop; under `lock`
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                k = state["next"]
                if k >= state["end"]:
                    return
                state["next"] = k + 1
            try:
                results[k] = (True, [function(item) for item in items[k * chunk : (k + 1) * chunk]])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                results[k] = (False, exc)
                with lock:  # what comes after is not needed; earlier chunks may still fail first
                    state["end"] = min(state["end"], k + 1)
            finished[k].set()

    threads = [threading.Thread(target=work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for k in range(n_chunks):
            finished[k].wait()
            ok, value = results[k]
            results[k] = None
            if not ok:
                raise value
            yield from value
    finally:
        with lock:
            state["end"] = 0  # no new chunk; those under way finish
        for thread in threads:
            thread.join()
