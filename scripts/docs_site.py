"""The documentation site's single sources: mkdocs hooks (``mkdocs.yml`` names this file) that
fill the pages under ``docs/`` from the files that own each text, so the site holds no copy.

Directives are HTML comments on a line of their own in a page (invisible on GitHub):

- ``<!-- include: PATH -->``: the whole file, PATH from the repository's root;
- ``<!-- include: PATH#Heading -->``: one section of it, from that heading to the next heading of
  the same or a higher level; a trailing ``+N`` or ``-N`` (``<!-- include: PATH#Heading -1 -->``)
  moves its headings N levels down or up, to fit the page;
- ``<!-- image: PATH alternative text -->``: an image of the repository (copied into the site);
- ``<!-- guarantees: ADAPTER -->``: ADAPTER's column of every per-adapter table of
  docs/semantics.md, each under the heading it is found under;
- ``<!-- amb-help -->``: ``amb --help`` and each subcommand's, from the parser itself, so a new
  subcommand appears without anyone editing the site.

Links in included text are relative to the file they come from. Each is pointed at the page
that shows what it names (the section it names, where a page shows only sections of that file),
and an image at a copy of the file in the site; a link to a file no page shows becomes its text
followed by the path, since the site cannot serve it.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from markdown.extensions.toc import slugify
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
DOCS = "docs"
SEMANTICS = f"{DOCS}/semantics.md"
#: Where images of included files are served in the site, under their repository path.
IMAGES = "repository"

_DIRECTIVE = re.compile(r"^<!--\s*(include|image|guarantees|amb-help)\s*:?\s*(.*?)\s*-->\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^(?P<path>[^#\s]+)(?:#(?P<heading>.*?))?(?:\s+(?P<shift>[+-]\d))?$")
_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


@dataclass
class Site:
    """What the pages show: for each (repository file, heading slug or None for the whole
    file), the page showing it; and the images included text uses."""

    shown: dict[tuple[str, str | None], str] = field(default_factory=dict)
    #: Where in each file the text shown at ``shown[(path, None)]`` starts.
    starts: dict[str, int] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)


_site = Site()


# -- mkdocs events -------------------------------------------------------------------------------


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Read every page's directives first, so that a link can be pointed at a page built later."""
    global _site
    _site = Site()
    for file in files.documentation_pages():
        # docs/ is the site's source: a link to one of its files goes to that page.
        _site.shown[(f"{DOCS}/{file.src_uri}", None)] = file.src_uri
        _site.starts[f"{DOCS}/{file.src_uri}"] = 0
    for file in files.documentation_pages():
        markdown = Path(file.abs_src_path or "").read_text(encoding="utf-8")
        for kind, argument in _DIRECTIVE.findall(markdown):
            if kind == "include":
                path, heading, _ = _split(argument)
                _register(file.src_uri, path, heading)
            elif kind == "image":
                _site.images.add(_image(argument)[0])
    for image in sorted(_site.images):
        files.append(File.generated(config, f"{IMAGES}/{image}", abs_src_path=str(ROOT / image)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return _DIRECTIVE.sub(lambda match: _expand(match[1], match[2], page.file.src_uri), markdown)


# -- directives ----------------------------------------------------------------------------------


def _expand(kind: str, argument: str, page: str) -> str:
    if kind == "include":
        path, heading, shift = _split(argument)
        return _relinked(_shifted(_section(path, heading), shift), path, page)
    if kind == "image":
        path, alternative = _image(argument)
        return f"![{alternative}]({_relative(f'{IMAGES}/{path}', page)})"
    if kind == "guarantees":
        return _guarantees(argument, page)
    return _amb_help()


def _split(argument: str) -> tuple[str, str | None, int]:
    """PATH, heading (None: the whole file) and heading shift of an include directive."""
    match = _INCLUDE.match(argument)
    if match is None:
        raise ValueError(f"docs: not an include directive: {argument!r}")
    return match["path"], (match["heading"] or "").strip() or None, int(match["shift"] or 0)


def _image(argument: str) -> tuple[str, str]:
    path, _, alternative = argument.partition(" ")
    if not (ROOT / path).is_file():
        raise ValueError(f"docs: no image {path}")
    return path, alternative.strip()


def _register(page: str, path: str, heading: str | None) -> None:
    text = _section(path, heading)
    # A link to the whole file goes where it is included whole, else to its earliest section.
    start = 0 if heading is None else _full_text(path).index(text)
    if start < _site.starts.get(path, len(_full_text(path)) + 1):
        _site.starts[path] = start
        _site.shown[(path, None)] = page
    for _, title in _headings(text):
        _site.shown.setdefault((path, slugify(_plain(title), "-")), page)
    for is_image, _, target in _LINK.findall(text):
        resolved = _resolve(path, target)
        if is_image and resolved is not None and (ROOT / resolved[0]).is_file():
            _site.images.add(resolved[0])


def _full_text(path: str) -> str:
    source = ROOT / path
    if not source.is_file():
        raise ValueError(f"docs: cannot include {path}: no such file")
    return source.read_text(encoding="utf-8")


def _section(path: str, heading: str | None) -> str:
    text = _full_text(path)
    if heading is None:
        return text
    lines = text.splitlines(keepends=True)
    found = [(number, level) for number, level, title in _heading_lines(lines) if _plain(title) == heading]
    if not found:
        raise ValueError(f"docs: {path} has no heading {heading!r}")
    [(start, level), *_] = found
    end = next(
        (number for number, other, _ in _heading_lines(lines) if number > start and other <= level),
        len(lines),
    )
    return "".join(lines[start:end])


def _shifted(text: str, shift: int) -> str:
    if not shift:
        return text
    lines = text.splitlines(keepends=True)
    for number, level, _ in list(_heading_lines(lines)):
        if not 1 <= level + shift <= 6:
            raise ValueError(f"docs: cannot move a level-{level} heading by {shift}")
        lines[number] = "#" * (level + shift) + lines[number][level:]
    return "".join(lines)


def _heading_lines(lines: list[str]) -> Iterator[tuple[int, int, str]]:
    """(line number, level, title) of each heading, skipping fenced code (``# a comment``)."""
    fenced = False
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            yield number, len(match[1]), match[2]


def _headings(text: str) -> Iterator[tuple[int, str]]:
    for _, level, title in _heading_lines(text.splitlines()):
        yield level, title


def _plain(title: str) -> str:
    """A heading's text as the reader sees it: what `slugify` and directives match on."""
    return title.replace("`", "")


# -- links ---------------------------------------------------------------------------------------


def _resolve(source: str, target: str) -> tuple[str, str | None] | None:
    """The repository file (and anchor) a link of ``source`` names; None for an external one."""
    if _EXTERNAL.match(target):
        return None
    path, _, anchor = target.partition("#")
    if path:
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if (ROOT / resolved).is_dir():
            resolved = posixpath.join(resolved, "README.md")
    else:
        resolved = source
    return resolved, anchor or None


def _relinked(text: str, source: str, page: str) -> str:
    def relink(match: re.Match[str]) -> str:
        is_image, label, target = match[1], match[2], match[3]
        resolved = _resolve(source, target)
        if resolved is None:
            return match[0]
        path, anchor = resolved
        if is_image:
            return f"{is_image}[{label}]({_relative(f'{IMAGES}/{path}', page)})"
        shown = _site.shown.get((path, anchor)) or _site.shown.get((path, None))
        if shown is None:
            return f"{label} (`{path}`)" if label.strip("`") != path else label
        fragment = f"#{anchor}" if anchor else ""
        return f"[{label}]({'' if shown == page else _relative(shown, page)}{fragment})"

    return _LINK.sub(relink, text)


def _relative(target: str, page: str) -> str:
    return posixpath.relpath(target, posixpath.dirname(page) or ".")


# -- generated text ------------------------------------------------------------------------------


def _guarantees(adapter: str, page: str) -> str:
    """``adapter``'s column of each table of docs/semantics.md with a column per adapter."""
    lines = (ROOT / SEMANTICS).read_text(encoding="utf-8").splitlines()
    heading, out = "", []
    for number, line in enumerate(lines):
        if match := _HEADING.match(line):
            heading = match[2]
        header = _cells(line)
        if (
            not line.startswith("|")
            or adapter not in header
            or (number and lines[number - 1].startswith("|"))
        ):
            continue
        column = header.index(adapter)
        link = f"{_relative('semantics.md', page)}#{slugify(_plain(heading), '-')}"
        out += [f"From [{heading}]({link}):", "", f"| | {adapter} |", "| --- | --- |"]
        for row in lines[number + 2 :]:
            if not row.startswith("|"):
                break
            cells = _cells(row)
            out.append(f"| {cells[0]} | {cells[column]} |")
        out.append("")
    if not out:
        raise ValueError(f"docs: {SEMANTICS} has no table with a column for {adapter!r}")
    return "\n".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _amb_help() -> str:
    import argparse

    from amb_core.__main__ import parser as amb_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width
    parser = amb_parser()
    [commands] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    parts = [("amb", parser)] + [(f"amb {name}", sub) for name, sub in commands.choices.items()]
    return "\n".join(f"### `{title}`\n\n```text\n{sub.format_help()}```\n" for title, sub in parts)
