"""``oanet export``: a checkpoint -> one ONNX file for the PyTorch-free runtime (docs/deploy.md)."""

from __future__ import annotations

HELP = "export a checkpoint to one ONNX file (network + SRM ranking scores) for oanet.runtime / --onnx"
# oanet.runtime.metadata.DEFAULT_OPSET, kept literal so that building the CLI (`oanet --help`, `oanet pq`)
# imports nothing of the runtime; a test keeps the two equal.
DEFAULT_OPSET = 17


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model_final.pth or last.pth written by `oanet train`")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, 16 or newer (default {DEFAULT_OPSET})")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the exported file with onnxruntime against PyTorch (on a val image of the "
                        "checkpoint's config when there is one, else a random image)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from oanet.errors import check_output_file
    from oanet.runtime.metadata import require

    require("onnx", "oanet export")  # before the (slow) checkpoint load
    check_output_file(args.out, "ONNX file (--out)")
    from oanet.model.checkpoint import load_model_from_checkpoint
    from oanet.export.exporter import check_opset, compare_with_pytorch, export_onnx

    check_opset(args.opset)
    checkpoint = Path(args.checkpoint)
    model, cfg, label_space = load_model_from_checkpoint(checkpoint, device="cpu", needs_labels_to="export it")
    path = export_onnx(model, cfg, label_space, args.out, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, opset {args.opset})")
    if args.no_check:
        return 0
    report = compare_with_pytorch(path, model, cfg)
    print(report["message"], file=sys.stderr if report["warning"] else sys.stdout)
    return 0 if report["ok"] else 1
