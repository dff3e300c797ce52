"""What ``oanet predict`` and ``oanet evaluate`` share: the model options and building the predictor.

Imports nothing heavy at module level; the ONNX path never imports torch.
"""

from __future__ import annotations

import contextlib
import os


def add_model_arguments(parser, checkpoint_help: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help=checkpoint_help)
    source.add_argument("--onnx", metavar="MODEL", help="an exported model (`oanet export`); runs on onnxruntime, "
                        "no PyTorch needed (pip install 'oanet[deploy]')")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the config's device; "
                        "with --onnx: onnxruntime's CPU provider)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "amp_fp16"), default="fp32",
                        help="autocast of the network (--checkpoint only): fp32 (default), bf16 (CPU or GPU), "
                        "amp_fp16 (fp16 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--loader-threads", "--loader-workers", dest="loader_threads", type=int, default=2,
                        help="threads decoding images ahead of the model (default 2; 0 = none)")


def check_common(args) -> None:
    from oanet.config import check_score_thresh
    from oanet.errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.loader_threads < 0:
        raise ConfigError(f"--loader-threads must be >= 0, got {args.loader_threads}")
    check_score_thresh(getattr(args, "score_thresh", None), "--score-thresh")


@contextlib.contextmanager
def predictor_from_args(args, order: str):
    """The predictor the options name, on this process's device; under torchrun (PyTorch only) the
    process group is set up for the duration, so the inference loop shards the images."""
    from oanet.errors import ConfigError

    score_thresh = getattr(args, "score_thresh", None)
    if args.onnx:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("--onnx runs in one process: start it without torchrun")
        if args.device not in (None, "cpu"):
            raise ConfigError("--device applies to --checkpoint; an ONNX model runs on onnxruntime's providers")
        if args.precision != "fp32":
            raise ConfigError("--precision applies to --checkpoint; an exported model runs as it was exported (fp32)")
        from oanet.runtime import OnnxPredictor

        yield OnnxPredictor(args.onnx, order=order, score_thresh=score_thresh)
        return
    from oanet.model.checkpoint import load_model_from_checkpoint
    from oanet.distributed import cleanup_distributed, init_distributed
    from oanet.inference.torch_predictor import Predictor

    model, cfg, label_space = load_model_from_checkpoint(args.checkpoint, device="cpu", needs_labels_to="name segments")
    context = init_distributed(args.device or cfg.device)
    try:
        yield Predictor(model, cfg, label_space, device=str(context.device), order=order, score_thresh=score_thresh,
                        precision=args.precision)
    finally:
        cleanup_distributed()


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"
