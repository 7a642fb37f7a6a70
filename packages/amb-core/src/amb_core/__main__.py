"""The ``amb`` command (also ``python -m amb_core``): ``amb pub``, ``amb sub``, ``amb request``,
``amb groups``, ``amb demo``; ``amb COMMAND --help`` for each."""

from __future__ import annotations

import argparse

from amb_core import __version__
from amb_core._cli import demo, groups, pub, request, sub
from amb_core._cli.options import build_parser
from amb_core._cli.running import run

#: The subcommands, in the order ``amb --help`` lists them: each a module of `amb_core._cli`
#: with a ``register(commands)`` function (see `amb_core._cli`). A new one is one import and one
#: entry here.
COMMANDS = (pub, sub, request, groups, demo)


def parser() -> argparse.ArgumentParser:
    """The ``amb`` command's argument parser (the documentation site shows its help)."""
    return build_parser(__version__, COMMANDS)


def main(argv: list[str] | None = None) -> None:
    """Run ``amb`` with ``argv`` (default: the command line); exits with its exit code."""
    raise SystemExit(run(parser().parse_args(argv)))


if __name__ == "__main__":
    main()
