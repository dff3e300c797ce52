"""Placeholder until the `demo` subcommand lands (being built now); replaced by its real module."""

HELP = "(demo: not built yet)"


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("oanet demo is not built yet")
