"""Placeholder until the `pq` subcommand lands (being built now); replaced by its real module."""

HELP = "(pq: not built yet)"


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("oanet pq is not built yet")
