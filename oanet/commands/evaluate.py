"""Placeholder until the `evaluate` subcommand lands (being built now); replaced by its real module."""

HELP = "(evaluate: not built yet)"


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("oanet evaluate is not built yet")
