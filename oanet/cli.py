"""The ``oanet`` command line. Subcommands are imported lazily so start-up stays cheap."""

from __future__ import annotations

import argparse
import importlib
import sys

# Command names; each is the module oanet.commands.<name> with "-" read as "_". Order is --help's order.
COMMANDS = ("demo", "ablate", "synth", "train", "evaluate", "predict", "export", "pq", "convert", "check-data", "merge", "srm")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    from oanet import __version__

    parser = argparse.ArgumentParser(
        prog="oanet",
        description="OANet panoptic segmentation: train, evaluate (PQ), predict images and videos, export to ONNX, "
        "reproduce the paper's ablations on a synthetic occlusion benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"oanet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name in COMMANDS:
        module = importlib.import_module(f"oanet.commands.{name.replace('-', '_')}")
        modules[name] = module
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    from oanet.errors import OANetError, describe_os_error

    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except OANetError as exc:
        # oanet's own readers raise these with the file name and the problem in the message.
        print(f"oanet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A disk full, a permission or a file in the way met while writing: the path and the reason,
        # not a traceback (FileNotFoundError raised by oanet's readers carries its own message).
        print(f"oanet {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oanet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
