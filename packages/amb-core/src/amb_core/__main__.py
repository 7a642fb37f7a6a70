"""The ``amb`` command (also ``python -m amb_core``): ``amb pub``, ``amb sub``, ``amb request``,
``amb groups``, ``amb demo``; ``amb COMMAND --help`` for each."""

from __future__ import annotations

from amb_core import __version__
from amb_core.cli import demo, groups, pub, request, sub
from amb_core.cli.options import build_parser
from amb_core.cli.running import run

#: The subcommands, in the order ``amb --help`` lists them: each a module of `amb_core.cli`
#: with a ``register(commands)`` function (see `amb_core.cli`). A new one is one import and one
#: entry here.
COMMANDS = (pub, sub, request, groups, demo)


def main(argv: list[str] | None = None) -> None:
    arguments = build_parser(__version__, COMMANDS).parse_args(argv)
    raise SystemExit(run(arguments))


if __name__ == "__main__":
    main()
