"""``oanet ablate``: the paper's ablation tables (1-5) on the synthetic occlusion benchmark, at CPU scale."""

from __future__ import annotations

import shlex
import sys

HELP = "the paper's ablation tables 1-5 on the synthetic occlusion benchmark (+ oracle order) -> ablations.md"


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder; running again in it continues the ablation")
    parser.add_argument("--tables", default=None,
                        help="which tables, e.g. 3,5 (default: what OUT was last run with, else 1,2,3,4,5)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="training seeds per row (default: what OUT was last run with, else 1); "
                        "tables show mean ± half range")
    parser.add_argument("--minutes-per-run", type=float, default=None,
                        help="training time per network: time the base network, then train every network "
                        "that many iterations (default: the preset's 400)")
    parser.add_argument("--data", default=None,
                        help="benchmark folder; generated there when absent (default: OUT/data)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny benchmark and networks, 2 iterations, 1 seed (numbers are meaningless)")


def run(args) -> int:
    from oanet.errors import make_dir

    make_dir(args.out)  # before the (slow) imports and the work
    from oanet.experiments.ablate import parse_tables, run_ablation

    command = "oanet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "oanet ablate"
    tables = parse_tables(args.tables) if args.tables is not None else None
    run_ablation(args.out, tables=tables, seeds=args.seeds, minutes_per_run=args.minutes_per_run,
                 data_dir=args.data, quick=args.quick, command=command)
    return 0
