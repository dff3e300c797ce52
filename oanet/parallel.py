"""How many worker processes or threads to use by default. No torch here (``oanet pq``, ``oanet synth``)."""

from __future__ import annotations

import os


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask under Linux, e.g. a SLURM or cgroup
    allocation), else all the machine's; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
