"""``oanet evaluate``: PQ of a model on a split, score-order heuristic vs SRM order, from one pass."""

from __future__ import annotations

HELP = "evaluate a checkpoint or an exported model (PQ/SQ/RQ): score-order heuristic and SRM order side by side"


def add_arguments(parser) -> None:
    from oanet.commands.common import add_model_arguments

    add_model_arguments(parser, "model_final.pth or last.pth written by `oanet train`")
    parser.add_argument("--data-json", help="COCO panoptic JSON of the split (default: the checkpoint config's data.val)")
    parser.add_argument("--data-png-dir", help="folder of the split's panoptic PNGs")
    parser.add_argument("--data-image-dir", help="folder of the split's images")
    parser.add_argument("--out", help="output folder (default: <model folder>/eval_<model name>)")
    parser.add_argument("--workers", type=int, default=None, help="PQ worker processes (default: all cores)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images (by id)")
    parser.add_argument("--score-thresh", type=float, default=None,
                        help="detection score from which instances are ranked and pasted (default: the model's)")
    parser.add_argument("--no-resume", action="store_true",
                        help="predict every image again (default: a rerun into the same --out skips the images an "
                        "earlier run completed, OUT/records)")
    parser.add_argument("--report-images", type=int, default=50, metavar="N",
                        help="report.html shows pictures of the N worst and N best images by PQ and the N where "
                        "the orders differ most (default 50; 0: no report.html)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


FLAGS = (("--data-json", "panoptic_json", "panoptic JSON"), ("--data-png-dir", "panoptic_dir", "panoptic PNG folder"),
         ("--data-image-dir", "image_dir", "image folder"))


def split_from_args(args, predictor):
    """The evaluation split: the options, completed by the model's config (data.val), each path checked
    here so that a miss names the flag that replaces it."""
    from pathlib import Path

    from oanet.config import SplitConfig
    from oanet.errors import ConfigError

    base = predictor.cfg.data.val if hasattr(predictor, "cfg") else SplitConfig()
    model = args.checkpoint or args.onnx
    split = SplitConfig(
        panoptic_json=args.data_json or base.panoptic_json,
        panoptic_dir=args.data_png_dir or base.panoptic_dir,
        image_dir=args.data_image_dir or base.image_dir,
    )
    for flag, name, _ in FLAGS:
        if not getattr(split, name):
            where = f"{model}: its config names no validation split" if args.checkpoint else "with --onnx"
            raise ConfigError(f"{where}; pass {flag}")
    given = {flag for flag, name, _ in FLAGS if getattr(args, name_of(flag))}
    missing = [(flag, name, what) for flag, name, what in FLAGS if not Path(getattr(split, name)).exists()]
    for flag, name, what in missing:
        if flag in given:
            raise FileNotFoundError(f"{getattr(split, name)}: {what} not found ({flag})")
    if missing:
        # A relative path from a checkpoint of before oanet stored absolute ones: it meant the folder
        # training ran in.
        flag, name, what = missing[0]
        flags = " ".join(f"{f} ..." for f, _, _ in missing)
        raise FileNotFoundError(f"{getattr(split, name)}: {what} of the evaluation split not found (data.val.{name} "
                                f"of {model}); pass {flags}, or run from the folder training ran in")
    return split


def name_of(flag: str) -> str:
    """``--data-png-dir`` -> ``data_png_dir`` (argparse's attribute)."""
    return flag[2:].replace("-", "_")


def run(args) -> int:
    from pathlib import Path

    from oanet.commands.common import check_common, is_main_process, predictor_from_args
    from oanet.inference.evaluate import evaluate, format_comparison
    from oanet.errors import make_dir
    from oanet.orders import order_key
    from oanet.errors import ConfigError

    check_common(args)
    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {args.max_images}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if args.report_images < 0:
        raise ConfigError(f"--report-images must be >= 0, got {args.report_images}")
    model_path = Path(args.checkpoint or args.onnx)
    out_dir = make_dir(Path(args.out) if args.out else model_path.parent / f"eval_{model_path.stem}")
    with predictor_from_args(args, order="both") as predictor:
        split = split_from_args(args, predictor)
        evaluation = evaluate(
            predictor, split, out_dir, workers=args.workers, max_images=args.max_images,
            batch_size=args.batch_size, loader_threads=args.loader_threads, progress=not args.no_progress,
            resume=not args.no_resume,
        )
    if is_main_process():
        print(format_comparison(evaluation.results[order_key("score")], evaluation.results[order_key("srm")]))
        if evaluation.order_measures is not None:
            from oanet.evaluation.order_measures import format_order_measures
            from oanet.orders import ORDER_TITLES, ORDERS

            print(format_order_measures(evaluation.order_measures, ORDERS, ORDER_TITLES))
        print(f"wrote {out_dir / 'results.json'}")
        if args.report_images:
            from oanet.report import write_evaluation_report

            report = write_evaluation_report(out_dir, split.panoptic_json, split.panoptic_dir, split.image_dir,
                                             images=args.report_images, workers=args.workers)
            print(f"wrote {report}")
    return 0
