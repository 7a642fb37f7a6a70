"""Check that distributions were installed from wheels by name, into this environment: run by
``nox -s dist`` with the Python of a fresh virtualenv.

    python scripts/check_installed.py amb-core==0.4.0 amb-redis

Fails unless each one is installed at the version given (if given), was resolved by name
(no ``direct_url.json``: not a path, URL or editable install), ships ``py.typed`` and has its
files inside this environment, not in a source tree.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path


def check(requirement: str) -> str:
    name, _, wanted = requirement.partition("==")
    distribution = importlib.metadata.distribution(name)
    found = distribution.version
    if wanted and found != wanted:
        raise SystemExit(f"{name} {found} is installed, not {wanted}")
    if distribution.read_text("direct_url.json") is not None:
        raise SystemExit(f"{name} was installed from a path or URL, not resolved by name from a wheel")
    files = distribution.files or []
    if not any(file.name == "py.typed" for file in files):
        raise SystemExit(f"{name} does not ship py.typed")
    prefix = Path(sys.prefix).resolve()
    for file in files:
        located = Path(str(distribution.locate_file(file))).resolve()
        if not located.is_relative_to(prefix):
            raise SystemExit(f"{name}'s {file} is at {located}, outside {prefix}")
    return f"{name} {found}"


if __name__ == "__main__":
    print("installed from wheels:", ", ".join(check(requirement) for requirement in sys.argv[1:]))
