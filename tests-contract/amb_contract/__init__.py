"""AMB's contract suite as a kit: the behavioural rules of docs/semantics.md, checked on a
real broker through the public API. Run it with ``AMB_CONTRACT_URL=scheme://... pytest --pyargs
amb_contract`` (tests-contract/README.md)."""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("amb-contract")
except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing it
    __version__ = "0+checkout"
