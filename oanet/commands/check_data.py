"""``oanet check-data``: every problem of a COCO panoptic dataset, grouped, before training or ``oanet pq``."""

from __future__ import annotations

import argparse

HELP = "check a COCO panoptic dataset (JSON, PNGs, images): list every problem, summarise, optionally fix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--panoptic-json", required=True, help="COCO panoptic JSON")
    parser.add_argument("--panoptic-dir", required=True, help="folder of its panoptic PNGs")
    parser.add_argument("--image-dir", help="folder of the images: also check they exist and their sizes (header only)")
    parser.add_argument(
        "--out", help="folder of check_report.json, the overlays and the fixed JSON "
        "(default: <json name>_check next to the JSON, or ./check-data where that folder is not writable)",
    )
    parser.add_argument("--fix", action="store_true",
                        help="write a fixed copy of the JSON (areas/bboxes from the PNGs, segments absent from their "
                        "PNG and annotations of unknown images dropped); the input is never changed")
    parser.add_argument("--fixed-json", help="where --fix writes (default: <out>/panoptic_fixed.json)")
    parser.add_argument("--overlays", type=int, default=6, help="images drawn into <out>/overlays (default 6; 0: none)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads (default: all cores; 0 or 1: in this thread)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_out(panoptic_json):
    """<json stem>_check beside the JSON where that folder is writable, else ./check-data."""
    import os
    from pathlib import Path

    folder = Path(panoptic_json).resolve().parent
    if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
        return folder / f"{Path(panoptic_json).stem}_check"
    return Path("check-data")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    # No BLAS call here: without this, importing numpy starts a BLAS thread per core (see `oanet pq`).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from oanet.data.validate import check_dataset
    from oanet.data.validate_report import (
        FIXED_NAME, describe_fix, fix_json, format_report, report_dict, summarise, write_overlays, write_report,
    )
    from oanet.errors import ConfigError, check_output_file, make_dir
    from oanet.fileio import write_json_atomic

    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if args.fixed_json and not args.fix:
        raise ConfigError("--fixed-json is where --fix writes: give --fix too")
    out = make_dir(Path(args.out) if args.out else default_out(args.panoptic_json), "--out folder")
    fixed_path = None
    if args.fix:  # outputs checked before the work, not after
        fixed_path = check_output_file(Path(args.fixed_json) if args.fixed_json else out / FIXED_NAME, "fixed JSON")
        if fixed_path.resolve() == Path(args.panoptic_json).resolve():
            raise ConfigError(f"{fixed_path}: --fix never rewrites the input JSON; give another --fixed-json")

    result = check_dataset(args.panoptic_json, args.panoptic_dir, args.image_dir, workers=args.workers,
                           progress=not args.no_progress)
    summary = summarise(result)
    print(format_report(result, summary))
    fix = None
    if args.fix:
        fixed, fix = fix_json(result)
        write_json_atomic(fixed_path, fixed)
        fix["fixed_json"] = str(fixed_path)
        print(describe_fix(fix, fixed_path))
        print(f"check it: oanet check-data --panoptic-json {fixed_path} --panoptic-dir {args.panoptic_dir}")
    overlays = write_overlays(result, out, args.overlays)
    report = write_report(result, summary, out, overlays, fix)
    from oanet.report import write_check_report

    page = write_check_report(out, report_dict(result, summary, overlays, fix), files=result.problems.files)
    print(f"report: {report} and {page}" + (f"; {len(overlays)} overlays in {out / 'overlays'}" if overlays else ""))
    return 2 if result.has_errors else 0
