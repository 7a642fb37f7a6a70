"""``amb groups list|purge|delete``: see and tidy the groups on a broker (docs/semantics.md,
"A group's lifetime")."""

from __future__ import annotations

import argparse
import json
from typing import cast

from amb_core._cli import options
from amb_core._cli.output import status, write_line
from amb_core._cli.running import ExitCode, UsageError
from amb_core._groups import GroupInfo

_COLUMNS = ("GROUP", "PATTERN", "MEMBERS", "BACKLOG")


def register(commands: options.Commands) -> None:
    parser = commands.add_parser(
        "groups",
        help="list, purge or delete groups",
        description="The groups on a broker: list them with their pattern, members and backlog, drop a\n"
        "group's waiting messages, or delete a group (its members must be stopped first). A group\n"
        "no member joined for group_expiry (a week by default) is removed by itself.",
        epilog=options.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Each action a parser of its own, so that ``--url`` comes after it: amb groups list --url URL.
    actions = cast(
        options.Commands,
        parser.add_subparsers(
            dest="groups_command", required=True, parser_class=options.Parser, metavar="ACTION"
        ),
    )
    listing = options.add_command(
        actions, "list", help="every group: pattern, members, messages waiting (its backlog)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per group")
    listing.set_defaults(action=list_groups)
    purge = options.add_command(
        actions,
        "purge",
        help="drop the messages waiting for a group (not those a member is handling); prints how many",
    )
    _group_arguments(purge)
    purge.set_defaults(action=purge_group)
    delete = options.add_command(
        actions, "delete", help="remove a group and its backlog; refused while members run (exit code 1)"
    )
    _group_arguments(delete)
    delete.set_defaults(action=delete_group)


def _group_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", type=options.group, help="the group name")
    parser.add_argument(
        "pattern",
        type=options.pattern,
        help="the topic or pattern it subscribed to (one name on two patterns is two groups)",
    )


async def list_groups(arguments: argparse.Namespace) -> ExitCode:
    async with options.open_bus(arguments.url) as bus:
        found = sorted(await bus.list_groups(), key=lambda info: (info.group, info.pattern))
    if arguments.json:
        for info in found:
            write_line(json.dumps(_as_dict(info), ensure_ascii=False))
    elif found:
        rows = [
            _COLUMNS,
            *((info.group, info.pattern, str(info.members), str(info.backlog)) for info in found),
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
        for row in rows:
            write_line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    else:
        status(arguments.prog, "no groups")
    return ExitCode.OK


def _as_dict(info: GroupInfo) -> dict[str, object]:
    return {"group": info.group, "pattern": info.pattern, "members": info.members, "backlog": info.backlog}


async def purge_group(arguments: argparse.Namespace) -> ExitCode:
    async with options.open_bus(arguments.url) as bus:
        purged = await bus.purge_group(arguments.group, arguments.pattern)
    write_line(str(purged))
    status(
        arguments.prog,
        f"dropped {purged} messages waiting for group {arguments.group} on {arguments.pattern}",
    )
    return ExitCode.OK


async def delete_group(arguments: argparse.Namespace) -> ExitCode:
    async with options.open_bus(arguments.url) as bus:
        deleted = await bus.delete_group(arguments.group, arguments.pattern)
    if not deleted:
        raise UsageError(f"there is no group {arguments.group} on {arguments.pattern}")
    status(arguments.prog, f"deleted group {arguments.group} on {arguments.pattern} and its backlog")
    return ExitCode.OK
