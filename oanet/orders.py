"""The fusion orders' vocabulary, in one place: their names, titles, the keys and folders they use.

An *order* is how overlapping detections are pasted: by detection ``score`` (the heuristic merge the
paper replaces), by the ``srm`` ranking score (Eq. 3), or, on a benchmark that knows the depth of
its instances, by the ``oracle`` (true depth; :mod:`oanet.experiments.oracle`). Every result keyed
by order (``results.json``, ``report.json``, output folders) uses :func:`order_key`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from oanet.errors import ConfigError

ORDERS = ("score", "srm")
ORACLE = "oracle"
# What predictors and commands accept: one order, or both from one forward pass.
ORDER_CHOICES = ("srm", "score", "both")
# How tables and pictures title the orders (the comparison table's columns are 23 characters wide).
ORDER_TITLES = {"score": "score order (heuristic)", "srm": "SRM order", ORACLE: "oracle order (true depth)"}
# The network output that ranks each order's detections (higher = pasted on top).
ORDER_SCORES = {"score": "scores", "srm": "ranking_scores"}


def order_key(order: str) -> str:
    """``"srm"`` -> ``"srm_order"``: the key of an order's PQ in results and the name of its folder."""
    return f"{order}_order"


def order_dir(out_dir: Path, order: str, orders: Sequence[str]) -> Path:
    """Where one order's PNGs and JSON go: ``out_dir`` itself when it is the only order written,
    else ``out_dir/<order>_order/``."""
    return Path(out_dir) / order_key(order) if len(orders) > 1 else Path(out_dir)


# Folders that `oanet predict` writes into its --out itself (a video's folder must not take one).
RESERVED_FOLDERS = frozenset({"panoptic", "overlays", *(order_key(o) for o in (*ORDERS, ORACLE))})


def check_order(order: str) -> str:
    if order not in ORDER_CHOICES:
        raise ConfigError(f"order must be one of {', '.join(ORDER_CHOICES)}, got {order!r}")
    return order


def orders_of(order: str) -> tuple[str, ...]:
    """The orders that ``order`` (one of :data:`ORDER_CHOICES`) stands for."""
    return ORDERS if check_order(order) == "both" else (order,)
