"""``oanet merge``: any detector's instances + a semantic prediction -> COCO panoptic, by score or by the SRM."""

from __future__ import annotations

import argparse

HELP = ("merge a detector's instance results (COCO RLE) with a semantic prediction into COCO panoptic, "
        "pasting overlaps by detection score (panopticapi's rules) or by a spatial ranking module")

EPILOG = """examples:
  oanet merge --instances segm_results.json --semantic sem_pngs/ --images-json panoptic_val2017.json --out merged
  oanet merge --instances segm_results.json --semantic sem_pngs/ --images-json panoptic_val2017.json \\
      --srm srm.pth --order both --gt-json panoptic_val2017.json --gt-dir panoptic_val2017/ --out merged
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--instances", required=True, metavar="RESULTS.json",
                        help="COCO instance results: a list of image_id, category_id, score, RLE segmentation")
    parser.add_argument("--semantic", required=True, metavar="SEM",
                        help="a folder of semantic label PNGs (pixel = category id; 0 and 255 = void), "
                             "or COCO-stuff results (a JSON list of image_id, category_id, RLE segmentation)")
    parser.add_argument("--images-json", required=True, metavar="F",
                        help="a COCO or COCO panoptic JSON giving the image ids, file names and sizes")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (COCO panoptic PNG + JSON per order)")
    parser.add_argument("--order", choices=("score", "srm", "both"), default=None,
                        help="paste overlaps by detection score, by the SRM, or write both (default: both with --srm, "
                             "else score)")
    parser.add_argument("--srm", metavar="srm.pth",
                        help="the spatial ranking module: a file of `oanet srm train`, or an OANet checkpoint")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="instances below this score are dropped (0.5)")
    parser.add_argument("--overlap-thresh", type=float, default=0.5,
                        help="drop an instance when more than this share of it is already taken (0.5)")
    parser.add_argument("--stuff-area", type=float, default=4096, help="minimum stuff segment area in pixels (4096)")
    parser.add_argument("--categories", metavar="F",
                        help="categories JSON (panopticapi's panoptic_coco_categories.json); default: the images "
                             "JSON's if they say isthing, else the 133 COCO panoptic categories")
    parser.add_argument("--gt-json", help="ground-truth COCO panoptic JSON: also report PQ and the order measures")
    parser.add_argument("--gt-dir", help="folder of the ground-truth PNGs")
    parser.add_argument("--gt-instances", help="ground-truth COCO instances JSON (amodal masks for the occlusion levels)")
    parser.add_argument("--image-dir", help="folder of the images: report.html draws the segments over them")
    parser.add_argument("--report-images", type=int, default=50, metavar="N",
                        help="report.html shows pictures of the N worst and N best images by PQ (with --gt-json) and "
                        "the N where the orders differ most (default 50; 0: no report.html)")
    parser.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--device", default="cpu", help="device of the SRM and the fusion (cpu, cuda)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from oanet.errors import ConfigError, make_dir
    from oanet.merge.inputs import read_inputs
    from oanet.merge.settings import MergeSettings
    from oanet.merge.report import evaluate_merge, print_merge_report
    from oanet.merge.run import run_merge, write_summary
    from oanet.orders import orders_of
    from oanet.parallel import default_workers

    order = args.order or ("both" if args.srm else "score")
    orders = orders_of(order)
    if "srm" in orders and not args.srm:
        raise ConfigError(f"--order {order} needs --srm (a file of `oanet srm train`, or an OANet checkpoint)")
    if bool(args.gt_json) != bool(args.gt_dir):
        raise ConfigError("--gt-json and --gt-dir go together")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.report_images < 0:
        raise ConfigError(f"--report-images must be >= 0, got {args.report_images}")
    settings = MergeSettings(args.score_thresh, args.overlap_thresh, args.stuff_area)
    out_dir = make_dir(Path(args.out))
    inputs = read_inputs(args.instances, args.semantic, args.images_json, args.categories)
    ranker = None
    if args.srm:
        from oanet.srm.ranker import SpatialRanker

        ranker = SpatialRanker.from_file(args.srm, device=args.device)
        if ranker.label_space.thing_ids.tolist() != inputs.label_space.thing_ids.tolist():
            raise ConfigError(f"{args.srm}: the SRM ranks thing classes {ranker.label_space.thing_ids.tolist()[:8]}..., "
                              f"the images JSON's categories are {inputs.label_space.thing_ids.tolist()[:8]}...")
    measures = None
    if args.gt_json:
        from oanet.evaluation.order_measures import OrderMeasures

        measures = OrderMeasures(args.gt_json, args.gt_dir, args.gt_instances, orders)
    summary = run_merge(inputs, out_dir, orders, ranker, settings, workers=args.workers or default_workers(),
                        progress=not args.no_progress, measure=measures.add if measures else None)
    if measures is not None:
        summary["evaluation"] = evaluate_merge(summary, measures, args.gt_json, args.gt_dir, out_dir, orders)
        print_merge_report(summary["evaluation"], orders)
    print(f"summary written to {write_summary(out_dir, summary)}")
    if args.report_images:
        from oanet.report import write_merge_report

        report = write_merge_report(out_dir, summary, gt_json=args.gt_json, gt_dir=args.gt_dir,
                                    image_dir=args.image_dir, images=args.report_images,
                                    workers=args.workers or default_workers())
        print(f"report: {report}")
    return 0
