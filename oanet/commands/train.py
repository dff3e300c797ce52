"""Placeholder until the `train` subcommand lands (being built now); replaced by its real module."""

HELP = "(train: not built yet)"


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("oanet train is not built yet")
