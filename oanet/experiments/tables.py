"""The paper's ablation tables (1-5) as data, and their rendering from per-seed PQ results. No torch here.

A row names the trained network it reads (``network``), the SRM that ranked (``srm``: None = the
network's own, jointly trained one; else a variant trained alone, see
:mod:`oanet.train.srm_training`) and the fusion order it reports (``score``: the heuristic merge,
which is what the paper's SRM-less baselines do; ``srm``; ``oracle``). ``paper`` is the row's
(PQ, PQ_th, PQ_st) on COCO val with ResNet-50, for the direction of each effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from oanet.orders import ORACLE, ORDERS, order_key

GROUPS = {"pq": "All", "pq_th": "Things", "pq_st": "Stuff"}
HEADER = "| {first} | PQ | PQ_th | PQ_st |{extra} paper, COCO val (R-50): PQ / PQ_th / PQ_st |"


@dataclass(frozen=True)
class Row:
    label: str
    network: str
    order: str = "score"
    srm: Optional[str] = None
    paper: Optional[tuple[float, float, float]] = None
    paper_note: str = ""  # shown instead of numbers when the paper has none

    @property
    def evaluation(self) -> tuple[str, Optional[str]]:
        """The (network, SRM variant) evaluation this row reads."""
        return self.network, self.srm


@dataclass(frozen=True)
class Table:
    number: int
    title: str
    first_column: str
    rows: tuple[Row, ...]
    note: str = ""
    oracle_share: bool = False  # a column with each SRM row's share of the oracle's PQ_th gain


BASELINE = (37.2, 45.4, 24.9)
WITH_SRM = (39.0, 48.3, 24.9)
NOT_IN_PAPER = "not in the paper"

TABLES: tuple[Table, ...] = (
    Table(1, "Loss balance λ (Eq. 1)", "λ", (
        Row("0.2", "lambda_0.2", paper=(36.9, 45.0, 24.6)),
        Row("0.25", "base", paper=BASELINE),
        Row("0.33", "lambda_0.33", paper=(36.9, 44.4, 25.4)),
        Row("0.50", "lambda_0.5", paper=(36.5, 43.5, 25.9)),
        Row("0.75", "lambda_0.75", paper=(35.3, 41.9, 25.4)),
        Row("1.0", "lambda_1.0", paper_note="did not converge"),
    ), note="Score order (the paper's baselines have no SRM)."),
    Table(2, "Object context in the stuff branch", "supervised classes", (
        Row("stuff only (Stuff-SC)", "stuff_classes_stuff", paper=(36.7, 43.8, 25.9)),
        Row("stuff + things (Stuff-SC + Object-SC)", "base", paper=BASELINE),
    ), note="Score order."),
    Table(3, "Spatial ranking module vs the heuristic merge", "method", (
        Row("baseline (score order)", "base", paper=BASELINE),
        Row("w/ pano-instance GT (score order)", "pano_instance_gt", paper=(36.1, 43.5, 24.9)),
        Row("w/ spatial ranking module", "base", order="srm", paper=WITH_SRM),
        Row("w/ SRM trained on predicted masks", "base", order="srm", srm="gcn7_predicted", paper_note=NOT_IN_PAPER),
        Row("oracle order (true depth)", "base", order="oracle", paper_note=NOT_IN_PAPER),
    ), note="The first, third, fourth and last rows are the same network and detections, pasted in four "
            "orders; the oracle row is the best an ordering can do with them.", oracle_share=True),
    Table(4, "Feature sharing between the branches", "shared", (
        Row("no", "sharing_none", paper=(36.5, 44.4, 24.6)),
        Row("res1-res5", "sharing_backbone", paper=(37.0, 44.8, 25.2)),
        Row("+ skip-connection (FPN)", "base", paper=BASELINE),
    ), note="Score order."),
    Table(5, "SRM kernel", "kernel", (
        Row("1 × 1", "base", order="srm", srm="1x1", paper=(38.4, 47.4, 24.9)),
        Row("3 × 3", "base", order="srm", srm="3x3", paper=(38.7, 47.8, 24.9)),
        Row("1 × 7 + 7 × 1", "base", order="srm", srm="gcn7", paper=WITH_SRM),
    ), note="One network; each SRM trained alone on its batches and schedule (exact: docs/ablations.md).",
        oracle_share=True),
)
TABLE_NUMBERS = tuple(t.number for t in TABLES)


def tables(numbers: Sequence[int]) -> list[Table]:
    return [t for t in TABLES if t.number in set(numbers)]


# --------------------------------------------------------------------------------------------
# numbers


def row_values(result: Mapping[str, Any], order: str) -> dict[str, float]:
    """``{"pq", "pq_th", "pq_st"}`` in percent of one evaluation's ``<order>_order`` PQ dict."""
    pq = result[order_key(order)]
    return {key: 100.0 * float(pq[group]["pq"]) for key, group in GROUPS.items()}


def oracle_share(result: Mapping[str, Any]) -> Optional[float]:
    """The share of the PQ_th that a perfect order adds over the score order which the SRM order adds:
    ``(srm - score) / (oracle - score)`` of ``Things`` PQ, from one evaluation's ``score_order``,
    ``srm_order`` and ``oracle_order`` PQ dicts; None when the oracle adds nothing (undefined)."""
    score, srm, oracle = (float(result[order_key(o)]["Things"]["pq"]) for o in (*ORDERS, ORACLE))
    return (srm - score) / (oracle - score) if oracle - score > 1e-12 else None


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half the range: every seed's value lies within mean ± spread (0 for one seed)."""
    values = list(values)
    return sum(values) / len(values), (max(values) - min(values)) / 2


def summarize_row(row: Row, per_seed: Mapping[int, Mapping[str, Any]]) -> dict:
    """A row's numbers from ``{seed: record}``; a record is ``{"results": {...}}`` or ``{"diverged": msg}``."""
    out: dict[str, Any] = {"label": row.label, "network": row.network, "srm": row.srm, "order": row.order,
                           "paper": dict(zip(GROUPS, row.paper)) if row.paper else None,
                           "paper_note": row.paper_note or None, "seeds": {}, "diverged_seeds": []}
    for seed in sorted(per_seed):
        record = per_seed[seed]
        if record.get("diverged"):
            out["diverged_seeds"].append(seed)
            continue
        values = row_values(record["results"], row.order)
        if row.order == "srm":
            values["oracle_share"] = oracle_share(record["results"])
        out["seeds"][seed] = values
    if out["seeds"]:
        keys = ["pq", "pq_th", "pq_st"] + (["oracle_share"] if row.order == "srm" else [])
        for key in keys:
            values = [v[key] for v in out["seeds"].values() if v.get(key) is not None]
            if values:
                out.setdefault("mean", {})[key], out.setdefault("spread", {})[key] = mean_and_spread(values)
    return out


# --------------------------------------------------------------------------------------------
# Markdown


def format_value(summary: Mapping, key: str, scale: float = 1.0, digits: int = 1) -> str:
    if key not in summary.get("mean", {}):
        return "—"
    mean, spread = summary["mean"][key] * scale, summary["spread"][key] * scale
    if len(summary["seeds"]) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def format_paper(row: Row) -> str:
    if row.paper is None:
        return row.paper_note or "—"
    return " / ".join(f"{v:.1f}" for v in row.paper)


def format_table(table: Table, summaries: Sequence[Mapping]) -> str:
    """One table in the paper's layout, our numbers beside the paper's."""
    extra = " of oracle gain (PQ_th) |" if table.oracle_share else ""
    lines = [f"## Table {table.number}: {table.title}", "",
             HEADER.format(first=table.first_column, extra=extra),
             "|---|---:|---:|---:|" + ("---:|" if table.oracle_share else "") + "---|"]
    for row, summary in zip(table.rows, summaries):
        if summary["seeds"]:
            cells = [format_value(summary, key) for key in ("pq", "pq_th", "pq_st")]
        elif summary["diverged_seeds"]:
            cells = ["diverged", "", ""]
        else:
            cells = ["—", "—", "—"]
        if summary["diverged_seeds"] and summary["seeds"]:
            cells[0] += f" ({len(summary['diverged_seeds'])} seed(s) diverged)"
        if table.oracle_share:
            cells.append(format_value(summary, "oracle_share", scale=100.0, digits=0) + " %"
                         if row.order == "srm" and "oracle_share" in summary.get("mean", {}) else "")
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {format_paper(row)} |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def gather(table: Table, records: Mapping[tuple[str, Optional[str], int], Mapping]) -> list[dict]:
    """Each row's summary from ``{(network, srm, seed): record}`` (rows without records are empty)."""
    out = []
    for row in table.rows:
        per_seed = {seed: rec for (network, srm, seed), rec in records.items() if (network, srm) == row.evaluation}
        out.append(summarize_row(row, per_seed))
    return out


def format_tables(selected: Sequence[Table], records: Mapping[tuple[str, Optional[str], int], Mapping]) -> tuple[str, list[dict]]:
    """Markdown of the tables and their JSON (one dict per table)."""
    blocks, data = [], []
    for table in selected:
        summaries = gather(table, records)
        blocks.append(format_table(table, summaries))
        data.append({"table": table.number, "title": table.title, "note": table.note, "rows": summaries})
    return "\n\n".join(blocks), data
