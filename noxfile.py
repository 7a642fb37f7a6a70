"""Every check the project runs. `nox` runs them all (the README's test command).

Sessions that need a broker start it through scripts/services.py unless its AMB_*_URL variable
points at one already; a broker that cannot be had fails the session, it is never skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
DEFAULT_PYTHON = "3.11"
ADAPTERS = ["redis", "rabbitmq", "kafka"]
URL_VARIABLES = {"redis": "AMB_REDIS_URL", "rabbitmq": "AMB_RABBITMQ_URL", "kafka": "AMB_KAFKA_URL"}
LINTED = ["packages", "tests-contract", "scripts", "benchmarks", "noxfile.py"]


def _installed_pythons_on_path() -> None:
    """Make every pyenv-installed CPython findable as ``pythonX.Y`` (pyenv's shims only answer
    for the active version), and never let uv download an interpreter instead."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = [str(bin_dir) for version in PYTHONS for bin_dir in sorted(versions.glob(f"{version}.*/bin"))]
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


_installed_pythons_on_path()
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
# Unit tests run on every supported Python that is installed; CI's matrix covers the others.
nox.options.error_on_missing_interpreters = False


def _install_packages(session: nox.Session, *adapters: str) -> None:
    editable = ["packages/amb-core", *(f"packages/amb-{name}" for name in adapters)]
    session.install(*(arg for path in editable for arg in ("-e", path)))


def _broker_url(session: nox.Session, adapter: str) -> str:
    """The URL of a running broker for ``adapter``: the one named in the environment, or one the
    launcher starts now."""
    variable = URL_VARIABLES[adapter]
    if variable not in os.environ:
        session.run("python", "scripts/services.py", "up", adapter, external=True)
        for line in session.run(
            "python", "scripts/services.py", "env", external=True, silent=True
        ).splitlines():
            name, _, value = line.partition("=")
            if name == variable:
                return value.strip()
        session.error(f"scripts/services.py env did not print {variable}")
    return os.environ[variable]


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session(python=DEFAULT_PYTHON)
def types(session: nox.Session) -> None:
    """mypy --strict over every package, the launcher and the contract suite."""
    _install_packages(session, *ADAPTERS, "opentelemetry")
    session.install(
        "mypy", "pytest", "nox", "matplotlib", "faststream[redis,rabbit,kafka]", "opentelemetry-sdk"
    )
    session.run(
        "mypy", "--strict", *[f"packages/amb-{name}/src" for name in ["core", *ADAPTERS, "opentelemetry"]]
    )
    session.run(
        "mypy", "--strict", "packages/amb-core/tests/test_middleware.py", "packages/amb-opentelemetry/tests"
    )
    session.run("mypy", "--strict", "scripts/services.py", "tests-contract", "benchmarks")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """amb-core's unit tests, including the seed README's examples."""
    _install_packages(session)
    session.install("pytest")
    session.run("pytest", "packages/amb-core/tests", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize("adapter", ADAPTERS, ids=ADAPTERS)
def adapter(session: nox.Session, adapter: str) -> None:
    """An adapter package's own tests, against its real broker."""
    env = {URL_VARIABLES[adapter]: _broker_url(session, adapter)}
    _install_packages(session, adapter)
    session.install("pytest")
    session.run("pytest", f"packages/amb-{adapter}/tests", *session.posargs, env=env)


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize("adapter", ["memory", *ADAPTERS], ids=["memory", *ADAPTERS])
def contract(session: nox.Session, adapter: str) -> None:
    """The shared behavioural suite against one adapter's real broker, fault tests included."""
    if adapter == "memory":
        env = {"AMB_CONTRACT_URL": "memory://contract"}
        _install_packages(session)
    else:
        env = {"AMB_CONTRACT_URL": _broker_url(session, adapter)}
        _install_packages(session, adapter)
    session.install("pytest")
    session.run("pytest", "tests-contract", *session.posargs, env=env)


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize("adapter", ["memory", *ADAPTERS], ids=["memory", *ADAPTERS])
def otel(session: nox.Session, adapter: str) -> None:
    """amb-opentelemetry's tests (the SDK's in-memory exporter and reader) on one adapter's real broker."""
    if adapter == "memory":
        env = {"AMB_OTEL_URL": "memory://otel"}
        _install_packages(session, "opentelemetry")
    else:
        env = {"AMB_OTEL_URL": _broker_url(session, adapter)}
        _install_packages(session, adapter, "opentelemetry")
    session.install("pytest", "opentelemetry-sdk")
    session.run("pytest", "packages/amb-opentelemetry/tests", *session.posargs, env=env)


@nox.session(python=DEFAULT_PYTHON)
def bench(session: nox.Session) -> None:
    """The quick benchmarks (no assertions on timings): the in-memory broker, ours against 0.1.0's
    method, and with amb-opentelemetry on against off."""
    _install_packages(session, "opentelemetry")
    session.install("matplotlib", "opentelemetry-sdk")
    session.run("python", "benchmarks/reproduce_results.py", "--iterations", "50", "--impl", "current")
    session.run("python", "benchmarks/run.py", "--adapters", "memory", "--quick")
    session.run("python", "benchmarks/run.py", "--adapters", "memory", "--quick", "--middleware", "otel")
