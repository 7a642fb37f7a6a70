"""The import paths of amb-core 0.1.0, kept working: each old name still imports, with a
`DeprecationWarning` that names where it lives now.

An old module defines a PEP 562 ``__getattr__`` built by `moved`, so the warning is raised when
a name is taken (``from amb_core.models import Message``) and points at the line that took it.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

#: The first version of this rewrite; the one every deprecation message counts from.
SINCE = "amb-core 0.4.0"


def moved(
    old_module: str,
    new_homes: Mapping[str, str],
    load: Callable[[str], ModuleType] = importlib.import_module,
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old_module`` that serves each name of ``new_homes`` from
    the module named there (imported by ``load`` on first use), warning each time."""

    def __getattr__(name: str) -> Any:
        home = new_homes.get(name)
        if home is None:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        # ``from package import name`` looks the name up twice: once in the import machinery
        # (to tell a name from a submodule), then at the importing line. Warn only there.
        if sys._getframe(1).f_globals.get("__name__") != "importlib._bootstrap":
            warnings.warn(
                f"{old_module}.{name} is deprecated since {SINCE}: use `from {home} import {name}`",
                DeprecationWarning,
                stacklevel=2,
            )
        return getattr(load(home), name)

    return __getattr__
