"""``oanet predict``: panoptic PNG + COCO JSON + overlay picture for images and folders."""

from __future__ import annotations

HELP = "predict panoptic segmentations (COCO PNG + JSON) and overlay pictures for images or folders"


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    parser.add_argument("--checkpoint", required=True, help="model_final.pth or last.pth written by `oanet train`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--order", choices=("srm", "score", "both"), default="srm",
        help="paste instances by SRM ranking score (default), by detection score (the heuristic), "
        "or both (two outputs, overlays side by side)",
    )
    parser.add_argument("--score-thresh", type=float, default=None,
                        help="detections below this score are not pasted (default: the config's model.fusion.score_thresh)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--no-overlays", action="store_true", help="write PNG + JSON only")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the config's device)")


def run(args) -> int:
    from pathlib import Path

    from oanet.engine.checkpoint import load_model_from_checkpoint
    from oanet.engine.distributed import resolve_device
    from oanet.engine.predict import list_images, predict
    from oanet.errors import ConfigError

    if args.score_thresh is not None and not 0.0 <= args.score_thresh <= 1.0:
        raise ConfigError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    list_images(args.inputs)  # fail on a missing path or an empty folder before loading the model
    checkpoint = Path(args.checkpoint)
    model, cfg, label_space = load_model_from_checkpoint(checkpoint, device="cpu")
    if label_space is None:
        raise ConfigError(f"{checkpoint}: checkpoint holds no label space (category names); cannot name segments")
    model.to(resolve_device(args.device or cfg.device))
    summary = predict(
        model, cfg, label_space, args.inputs, args.out,
        order=args.order, score_thresh=args.score_thresh, batch_size=args.batch_size,
        overlays=not args.no_overlays,
    )
    for order, path in summary["panoptic_json"].items():
        print(f"{order} order: {path}")
    if summary["overlay_dir"]:
        print(f"overlays: {summary['overlay_dir']}")
    print(f"predicted {summary['images']} image(s)")
    return 0
