"""What ``oanet train`` does to a freshly built model before the first iteration: ``model.init`` and
``model.freeze`` (docs/pretrained.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from torch import nn

from oanet.config import Config
from oanet.model.pretrained import LoadReport, freeze, load_pretrained

INIT_REPORT = "init_report.json"


def apply_init(
    model: nn.Module, cfg: Config, label_space: Any, output_dir: str | Path, *, fresh: bool, is_main: bool = True
) -> Optional[LoadReport]:
    """Load ``cfg.model.init`` into ``model`` when the run starts ``fresh`` (a resumed run has every
    weight in its checkpoint), print the :class:`LoadReport` and save it as ``OUTPUT/init_report.json``
    (rank 0); then freeze ``cfg.model.freeze``, on resume too, so the optimiser sees the same parameters.
    Every rank loads the same weights, so the ranks start identical."""
    report = None
    if fresh and cfg.model.init:
        report = load_pretrained(model, cfg.model.init, label_space)
        if is_main:
            print(report, file=sys.stderr)
            report.save(Path(output_dir) / INIT_REPORT)
    frozen = freeze(model, cfg.model.freeze)
    if frozen and is_main and fresh:
        print(f"oanet train: frozen (not trained): {', '.join(frozen)}", file=sys.stderr)
    return report
