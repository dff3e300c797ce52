"""One module per CLI subcommand.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules here
must import nothing heavy at module level (no torch, torchvision, matplotlib): ``oanet --help``,
``oanet pq`` and ``oanet synth`` never pay for torch. Import heavy modules inside ``run``.
"""
