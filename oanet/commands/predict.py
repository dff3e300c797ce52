"""Placeholder until the `predict` subcommand lands (being built now); replaced by its real module."""

HELP = "(predict: not built yet)"


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("oanet predict is not built yet")
