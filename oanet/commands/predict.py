"""``oanet predict``: panoptic PNG + COCO JSON + overlay picture for images, folders and videos."""

from __future__ import annotations

HELP = "predict panoptic segmentations (COCO PNG + JSON) and overlays for images, folders or videos"


def add_arguments(parser) -> None:
    from oanet.commands.common import add_model_arguments

    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders of images, and/or video files (.mp4 ...; needs oanet[video])")
    add_model_arguments(parser, "model_final.pth or last.pth written by `oanet train`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--order", choices=("srm", "score", "both"), default="srm",
        help="paste instances by SRM ranking score (default), by detection score (the heuristic), "
        "or both (two outputs, overlays side by side)",
    )
    parser.add_argument("--score-thresh", type=float, default=None,
                        help="detection score from which instances are ranked and pasted (default: the model's)")
    parser.add_argument("--no-overlays", action="store_true", help="write PNG + JSON only")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first image that cannot be read (default: skip it, list it in "
                        "OUT/skipped.json, and fail only when no image could be read)")
    parser.add_argument("--no-resume", action="store_true",
                        help="predict every image again (default: a rerun into the same --out skips the images an "
                        "earlier run completed, OUT/records)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def run(args) -> int:
    import sys
    from pathlib import Path

    from oanet.commands.common import check_common, is_main_process, predictor_from_args
    from oanet.errors import DataError, make_dir
    from oanet.inference.predict import predict, split_inputs

    check_common(args)
    split_inputs(args.inputs)  # fail on a missing path or an empty folder before loading the model
    make_dir(args.out)
    with predictor_from_args(args, order=args.order) as predictor:
        summary = predict(predictor, args.inputs, args.out, batch_size=args.batch_size,
                          overlays=not args.no_overlays, loader_threads=args.loader_threads,
                          progress=not args.no_progress, strict=args.strict, resume=not args.no_resume)
    if not is_main_process():
        return 0
    skipped, skipped_json = summary["skipped"], Path(args.out) / "skipped.json"
    if skipped and not summary["images"] and not summary["videos"]:
        raise DataError(f"none of the {len(skipped)} images could be read (the reasons: {skipped_json}); "
                        f"the first: {skipped[0]['file']}: {skipped[0]['reason']}")
    for order, path in summary["panoptic_json"].items():
        print(f"{order} order: {path}")
    if summary["overlay_dir"]:
        print(f"overlays: {summary['overlay_dir']}")
    for video, info in summary["videos"].items():
        print(f"{video}: {info['frames']} frames at {info['fps']:g} fps -> {info['folder']}"
              + (f", {info['overlay_video']}" if info["overlay_video"] else ""))
    print(f"predicted {summary['images']} image(s) and {len(summary['videos'])} video(s)")
    if skipped:
        print(f"oanet predict: skipped {len(skipped)} image(s) that could not be read "
              f"(the list and reasons: {skipped_json})", file=sys.stderr)
    return 0
