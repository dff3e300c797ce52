"""``oanet evaluate``: PQ of a checkpoint on a split, score-order heuristic vs SRM order, from one pass."""

from __future__ import annotations

HELP = "evaluate a checkpoint (PQ/SQ/RQ) with the score-order heuristic and the SRM order side by side"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model_final.pth or last.pth written by `oanet train`")
    parser.add_argument("--data-json", help="COCO panoptic JSON of the split (default: the checkpoint config's data.val)")
    parser.add_argument("--data-png-dir", help="folder of the split's panoptic PNGs")
    parser.add_argument("--data-image-dir", help="folder of the split's images")
    parser.add_argument("--out", help="output folder (default: <checkpoint folder>/eval_<checkpoint name>)")
    parser.add_argument("--workers", type=int, default=None, help="PQ worker processes (default: all cores)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images (by id)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--loader-workers", type=int, default=None, help="image-loading processes (default: config's data.num_workers)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the config's device)")


def run(args) -> int:
    import dataclasses
    from pathlib import Path

    from oanet.engine.checkpoint import load_model_from_checkpoint
    from oanet.engine.distributed import resolve_device
    from oanet.engine.evaluate import evaluate, format_comparison
    from oanet.errors import ConfigError

    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {args.max_images}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    for name, value in (("--workers", args.workers), ("--loader-workers", args.loader_workers)):
        if value is not None and value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    checkpoint = Path(args.checkpoint)
    model, cfg, label_space = load_model_from_checkpoint(checkpoint, device="cpu")
    device = resolve_device(args.device or cfg.device)
    model.to(device)
    split = dataclasses.replace(
        cfg.data.val,
        panoptic_json=args.data_json or cfg.data.val.panoptic_json,
        panoptic_dir=args.data_png_dir or cfg.data.val.panoptic_dir,
        image_dir=args.data_image_dir or cfg.data.val.image_dir,
    )
    for name, value in (("--data-json", split.panoptic_json), ("--data-png-dir", split.panoptic_dir),
                        ("--data-image-dir", split.image_dir)):
        if not value:
            raise ConfigError(f"{checkpoint}: its config names no validation split; pass {name}")
    out_dir = Path(args.out) if args.out else checkpoint.parent / f"eval_{checkpoint.stem}"
    results = evaluate(
        model, cfg, label_space, split, out_dir,
        workers=args.workers, max_images=args.max_images, batch_size=args.batch_size,
        num_workers=args.loader_workers,
    )
    print(format_comparison(results["score_order"], results["srm_order"]))
    print(f"wrote {out_dir / 'results.json'}")
    return 0
