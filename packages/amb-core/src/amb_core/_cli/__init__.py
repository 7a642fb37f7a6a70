"""The ``amb`` command, one module per subcommand, named after it (`amb_core.__main__` lists
them; the documentation site shows each one's ``--help`` by itself).

A subcommand is a module with ``register(commands)``, which adds its parser with
`amb_core._cli.options.add_command` and sets the coroutine that runs it::

    def register(commands: Commands) -> None:
        parser = add_command(commands, "ping", help="...")
        parser.set_defaults(action=ping)

    async def ping(arguments: argparse.Namespace) -> ExitCode: ...

`amb_core._cli.running.run` runs it: broker errors become one line and an exit code, Ctrl-C ends
it within a second without a traceback.
"""
