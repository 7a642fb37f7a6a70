"""`amb_core.adapter` is the one module an adapter author needs: it names everything the adapters
of this repository use from amb_core, and documents each of its names. The rest of amb_core is
private, and nothing outside amb-core imports it."""

from __future__ import annotations

import ast
import inspect
import pkgutil
from pathlib import Path

import pytest

import amb_core
import amb_core.adapter
import amb_core.middleware

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ROOT / "packages"
#: The modules of amb_core anyone may import: the API, the adapter authors' module, middleware
#: and testing helpers, the ``amb`` command, and the 0.1.0 paths kept as deprecated shims.
PUBLIC_MODULES = {"adapter", "middleware", "testing", "__main__"}
SHIMS = {"models", "hf_utils", "memory_broker", "broker", "adapters"}
#: The other distributions of this repository that build on amb-core.
USERS = sorted(path for path in PACKAGES.glob("amb-*/src") if path.parent.name != "amb-core")


def _names_imported_from_amb_core() -> set[tuple[str, str, str]]:
    """(file, module, name) for every ``from amb_core... import name`` in the other packages."""
    found: set[tuple[str, str, str]] = set()
    for source in USERS:
        for path in source.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "amb_core":
                    for alias in node.names:
                        found.add((str(path.relative_to(PACKAGES)), node.module or "", alias.name))
    return found


def test_the_other_packages_are_found() -> None:
    assert {path.parent.name for path in USERS} >= {"amb-redis", "amb-rabbitmq", "amb-kafka"}


def test_everything_the_adapters_use_is_in_amb_core_adapter() -> None:
    """A name the adapters import from amb_core is public: in amb_core.adapter, amb_core itself,
    or amb_core.middleware (for middleware such as amb-opentelemetry's)."""
    middleware = {name for name in vars(amb_core.middleware) if not name.startswith("_")}
    public = {*amb_core.adapter.__all__, *amb_core.__all__, "middleware", *middleware}
    missing = sorted(
        f"{file}: {module}.{name}"
        for file, module, name in _names_imported_from_amb_core()
        if name not in public
    )
    assert not missing, missing


@pytest.mark.parametrize("name", amb_core.adapter.__all__)
def test_each_name_resolves_and_is_documented(name: str) -> None:
    value = getattr(amb_core.adapter, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert inspect.getdoc(value), f"amb_core.adapter.{name} has no docstring"


def test_the_module_walks_an_author_through_every_name() -> None:
    doc = inspect.getdoc(amb_core.adapter) or ""
    assert not [name for name in amb_core.adapter.__all__ if f"`{name}" not in doc]


def test_every_other_module_of_amb_core_is_private() -> None:
    public = {
        module.name for module in pkgutil.iter_modules(amb_core.__path__) if not module.name.startswith("_")
    }
    assert public == (PUBLIC_MODULES | SHIMS) - {"__main__"}


def _importable(module: str) -> bool:
    """Whether code outside amb-core may import ``module`` (a dotted name under amb_core)."""
    parts = module.split(".")
    allowed = PUBLIC_MODULES | SHIMS  # the adapters' tests check that the 0.1.0 paths still work
    return len(parts) == 1 or (parts[1] in allowed and not any(part.startswith("_") for part in parts[2:]))


#: Where amb_core is used from outside: the other packages (code and tests), the contract suite,
#: the benchmarks and the repository's scripts.
OUTSIDE = [
    *(path for path in PACKAGES.glob("amb-*") if path.name != "amb-core"),
    ROOT / "tests-contract",
    ROOT / "benchmarks",
    ROOT / "scripts",
]


def test_nothing_outside_amb_core_imports_its_private_modules() -> None:
    found = []
    for folder in OUTSIDE:
        for path in folder.rglob("*.py"):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue  # virtualenvs, caches
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "amb_core":
                    modules = [node.module or ""]
                    if node.module == "amb_core":
                        modules = [
                            f"amb_core.{alias.name}" for alias in node.names if alias.name.startswith("_")
                        ]
                elif isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names if alias.name.split(".")[0] == "amb_core"]
                else:
                    continue
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno}: {module}"
                    for module in modules
                    if not _importable(module)
                ]
    assert not found, found
