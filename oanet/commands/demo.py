"""``oanet demo``: generate the occlusion benchmark, train the CPU preset, compare score order vs SRM."""

from __future__ import annotations

HELP = "the main job: synthetic occlusion benchmark -> train (CPU preset) -> PQ of score order vs SRM -> report.md"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="oanet-demo", help="output folder (default: oanet-demo)")
    parser.add_argument("--data", default=None,
                        help="benchmark folder; generated there when absent (default: OUT/data)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training time budget: time a few iterations, then train as many as fit "
                        "(learning-rate steps scaled); default: the preset's iteration count")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: a few tiny images and 2 iterations (numbers are meaningless)")


def run(args) -> int:
    from oanet.errors import make_dir

    make_dir(args.out)  # before the (slow) imports and the work
    from oanet.experiments.demo import run_demo

    run_demo(args.out, data_dir=args.data, minutes=args.minutes, quick=args.quick)
    return 0
