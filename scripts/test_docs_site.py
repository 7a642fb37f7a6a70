"""The documentation site's hooks (scripts/docs_site.py), on files made for each test: run by
``nox -s docs`` before the build."""

from __future__ import annotations

from pathlib import Path

import docs_site
import pytest

SEMANTICS = """# Semantics
## What each adapter guarantees
| | memory | redis |
|---|---|---|
| groups | round-robin | Streams groups |
| `max_message_size` | none | 8 MiB |

Capabilities below the table are not rows.

## Another table
| option | default |
| --- | --- |
| `max_attempts` | 3 |
"""

README = """# pkg

Intro with [the contract](../../docs/semantics.md#delivery) and [a test](tests/test_x.py).

## Install
```sh
# a comment, not a heading
pip install pkg
```
![plot](results/plot.png)

### Extras
See [Usage](#usage).

## Usage
Use it.
"""


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "semantics.md").write_text(SEMANTICS)
    package = tmp_path / "packages" / "pkg"
    (package / "results").mkdir(parents=True)
    (package / "README.md").write_text(README)
    (package / "results" / "plot.png").write_bytes(b"png")
    monkeypatch.setattr(docs_site, "ROOT", tmp_path)
    monkeypatch.setattr(docs_site, "_site", docs_site.Site())
    return tmp_path


def test_a_section_ends_at_the_next_heading_of_its_level_and_ignores_code(repository: Path) -> None:
    section = docs_site._section("packages/pkg/README.md", "Install")
    assert section.startswith("## Install\n")
    assert "# a comment, not a heading" in section
    assert "### Extras" in section
    assert "Usage\nUse it" not in section


def test_headings_move_to_fit_the_page(repository: Path) -> None:
    text = docs_site._expand("include", "packages/pkg/README.md#Install -1", "cli.md")
    assert text.startswith("# Install\n")
    assert "## Extras" in text
    assert "# a comment, not a heading" in text  # inside the code block: untouched


def test_a_missing_file_or_heading_fails_the_build(repository: Path) -> None:
    with pytest.raises(ValueError, match="no heading 'Nope'"):
        docs_site._section("packages/pkg/README.md", "Nope")
    with pytest.raises(ValueError, match="no such file"):
        docs_site._section("packages/nope/README.md", None)


def test_links_go_to_the_pages_that_show_their_targets(repository: Path) -> None:
    docs_site._site.shown[("docs/semantics.md", None)] = "semantics.md"
    docs_site._register("guide/install.md", "packages/pkg/README.md", "Install")
    docs_site._register("guide/usage.md", "packages/pkg/README.md", "Usage")

    whole = docs_site._expand("include", "packages/pkg/README.md", "adapters/pkg.md")

    assert "[the contract](../semantics.md#delivery)" in whole
    assert "a test (`packages/pkg/tests/test_x.py`)" in whole  # not on the site: named, not linked
    assert "![plot](../repository/packages/pkg/results/plot.png)" in whole
    assert "[Usage](../guide/usage.md#usage)" in whole
    assert docs_site._site.images == {"packages/pkg/results/plot.png"}


def test_an_adapter_gets_its_column_of_every_table_that_has_one(repository: Path) -> None:
    text = docs_site._guarantees("redis", "adapters/redis.md")
    assert text.splitlines() == [
        "From [What each adapter guarantees](../semantics.md#what-each-adapter-guarantees):",
        "",
        "| | redis |",
        "| --- | --- |",
        "| groups | Streams groups |",
        "| `max_message_size` | 8 MiB |",
    ]
    with pytest.raises(ValueError, match="no table with a column for 'kafka'"):
        docs_site._guarantees("kafka", "adapters/kafka.md")


def test_the_cli_page_shows_every_subcommand_the_parser_has() -> None:
    from amb_core.__main__ import COMMANDS

    text = docs_site._amb_help()
    assert "### `amb`\n" in text
    for command in COMMANDS:
        name = command.__name__.rpartition(".")[2]
        assert f"### `amb {name}`" in text
        assert f"usage: amb {name}" in text
