"""``oanet convert SOURCE ... --out DIR``: other label formats -> a COCO panoptic dataset. No torch."""

from __future__ import annotations

import argparse

HELP = "convert Cityscapes, ADE20K, 2-channel, semantic + instance PNGs or COCO instances (+ stuff) to COCO panoptic"

# Literal here so that `--help` imports nothing (oanet.convert.coco_detection.OVERLAPS and its default).
OVERLAPS = ("smaller-on-top", "larger-on-top", "error")


def _common(parser: argparse.ArgumentParser, split: bool = True) -> None:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: panoptic_{split}.json, panoptic_{split}/, convert_report.json; a rerun "
                             "into it skips the images already converted")
    if split:
        parser.add_argument("--split", default="train", metavar="NAME",
                            help="split name of the output files panoptic_NAME.json (default: train)")
    parser.add_argument("--workers", type=int, default=None, metavar="W",
                        help="threads (default: all available cores; 0 or 1: in this thread); does not change the output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _images(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", metavar="JSON",
                        help="COCO-style JSON whose 'images' list the images (id, file_name, width, height); each "
                             "is paired with the label PNG of its file name's stem (default: one image per PNG)")
    parser.add_argument("--image-dir", metavar="DIR",
                        help="folder of the images: the file_name of each image, sizes checked against the labels")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    p = sub.add_parser("cityscapes", help="gtFine *_instanceIds.png, as cityscapesscripts' createPanopticImgs",
                       description="Cityscapes gtFine/{split}/{city}/*_instanceIds.png -> COCO panoptic, segment for "
                                   "segment as cityscapesscripts' createPanopticImgs (ignoreInEval classes dropped)")
    p.add_argument("--root", required=True, metavar="CITYSCAPES", help="the folder holding gtFine/ (and leftImg8bit/)")
    p.add_argument("--split", required=True, choices=("train", "val", "test"))
    p.add_argument("--train-ids", action="store_true", help="category ids are the 19 train ids instead of the label ids")
    _common(p, split=False)

    p = sub.add_parser("ade20k", help="ADEChallengeData2016, as Mask2Former's prepare_ade20k_pan_seg.py",
                       description="ADEChallengeData2016 (150 classes; instances from annotations_instance/) -> COCO "
                                   "panoptic, by the rules of Mask2Former's datasets/prepare_ade20k_pan_seg.py")
    p.add_argument("--root", required=True, metavar="ADEChallengeData2016")
    p.add_argument("--split", choices=("train", "val"), help="one split (default: both)")
    _common(p, split=False)

    p = sub.add_parser("two-channel", help="panopticapi's 2-channel PNGs (channel 0 category, channel 1 instance)",
                       description="2-channel PNGs (channel 0 category, channel 1 instance) -> COCO panoptic, as "
                                   "panopticapi's converters/2channels2panoptic_coco_format.py")
    p.add_argument("--pngs", required=True, metavar="DIR", help="folder of the 2-channel PNGs")
    p.add_argument("--categories", required=True, metavar="FILE",
                   help="categories JSON (id, name, isthing[, color]), e.g. panoptic_coco_categories.json")
    p.add_argument("--void", type=int, default=0, help="category id of void pixels in channel 0 (default 0)")
    _images(p)
    _common(p)

    p = sub.add_parser("semantic-instance", help="a semantic label PNG + an instance id PNG per image",
                       description="a semantic label PNG (category ids) and an instance id PNG (0: none) per image "
                                   "-> COCO panoptic: things split by instance id, stuff by category")
    p.add_argument("--semantic", required=True, metavar="DIR", help="folder of the semantic PNGs (category ids)")
    p.add_argument("--instance", required=True, metavar="DIR",
                   help="folder of the instance PNGs, same file names (instance ids, 0 for stuff and void)")
    p.add_argument("--categories", required=True, metavar="FILE", help="categories JSON (id, name, isthing[, color])")
    p.add_argument("--ignore", type=int, nargs="+", default=[255], metavar="V",
                   help="semantic values that are void (default: 255)")
    _images(p)
    _common(p)

    p = sub.add_parser("coco-detection", help="COCO instances JSON (+ COCO-Stuff JSON), overlaps resolved",
                       description="COCO instances (+ COCO-Stuff) JSON -> COCO panoptic; overlapping masks are "
                                   "resolved by --overlaps and counted in the report")
    p.add_argument("--instances", required=True, metavar="F", help="COCO instances JSON (things)")
    p.add_argument("--stuff", metavar="F", help="COCO-Stuff JSON (stuff; its 'other' class is left out)")
    p.add_argument("--overlaps", choices=OVERLAPS, default=OVERLAPS[0],
                   help="which of two overlapping masks of one layer keeps the pixels (default: smaller-on-top; "
                        "'error' refuses them); things are always above stuff, objects above crowd regions")
    p.add_argument("--image-dir", metavar="DIR", help="folder of the images, to check their sizes")
    _common(p)


def _plans(args: argparse.Namespace) -> list:
    from oanet.convert import ade20k, cityscapes, coco_detection, semantic_instance, two_channel

    if args.source == "cityscapes":
        return [cityscapes.plan(args.root, args.split, args.train_ids)]
    if args.source == "ade20k":
        return [ade20k.plan(args.root, split) for split in ([args.split] if args.split else ["train", "val"])]
    if args.source == "two-channel":
        return [two_channel.plan(args.pngs, args.categories, args.split, args.images, args.image_dir, args.void)]
    if args.source == "semantic-instance":
        return [semantic_instance.plan(args.semantic, args.instance, args.categories, args.split, args.ignore,
                                       args.images, args.image_dir)]
    return [coco_detection.plan(args.instances, args.stuff, args.split, args.overlaps, args.image_dir)]


def _summary(report: dict, seconds: float) -> list[str]:
    lines = [f"{report['source']} {report['split']}: {report['images']} images ({report['converted']} converted, "
             f"{report['skipped']} already complete and skipped) in {seconds:.1f} s, {report['segments']} segments"]
    for drop in report["dropped"][:5]:
        lines.append(f"  dropped: {drop['reason']}: {drop['segments']} segments, {drop['pixels']} pixels "
                     f"in {drop['images']} images")
    for name, value in report["counters"].items():
        if value:
            lines.append(f"  {name.replace('_', ' ')}: {value}")
    lines += [f"  note: {note}" for note in report["notes"]]
    paths = report["paths"]
    role = "val" if report["split"] in ("val", "test") else "train"
    overrides = f"data.{role}.panoptic_json={paths['panoptic_json']} data.{role}.panoptic_dir={paths['panoptic_dir']}"
    if paths["image_dir"]:
        overrides += f" data.{role}.image_dir={paths['image_dir']}"
    return lines + [f"  {overrides}", f"  report: {paths['report']}"]


def run(args: argparse.Namespace) -> int:
    import time

    from oanet.convert import run_plan
    from oanet.errors import ConfigError, make_dir

    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    make_dir(args.out)  # before reading any input, not after
    for plan in _plans(args):
        start = time.perf_counter()
        report = run_plan(plan, args.out, workers=args.workers, progress=not args.no_progress)
        print("\n".join(_summary(report, time.perf_counter() - start)))
    return 0
