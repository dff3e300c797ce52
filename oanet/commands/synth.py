"""Placeholder until the `synth` subcommand lands (being built now); replaced by its real module."""

HELP = "(synth: not built yet)"


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("oanet synth is not built yet")
