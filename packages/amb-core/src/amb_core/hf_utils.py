"""amb-core 0.1.0's ``amb_core.hf_utils`` (Hugging Face Hub upload helpers), removed: moving
files to and from the Hub is not the bus's job. Use ``huggingface_hub`` directly
(``HfApi().upload_file``, ``hf_hub_download``, ``DatasetCard``).

The names still import, with a `DeprecationWarning`, so code that imports them keeps loading:
``HF_AVAILABLE`` is False (as in 0.1.0 without ``huggingface_hub``) and calling a helper raises
`ImportError`, as 0.1.0 did without ``huggingface_hub``.
"""

from __future__ import annotations

import warnings
from typing import Any, NoReturn

from amb_core._deprecated import SINCE

_HELPERS = (
    "upload_experiment_logs",
    "download_dataset",
    "push_message_logs",
    "create_dataset_card",
    "HFDatasetManager",
)
_INSTEAD = "use huggingface_hub directly (HfApi().upload_file, hf_hub_download, DatasetCard)"


def _removed(name: str) -> Any:
    def helper(*args: object, **kwargs: object) -> NoReturn:
        raise ImportError(f"amb_core.hf_utils.{name} was removed in {SINCE}: {_INSTEAD}")

    helper.__name__ = helper.__qualname__ = name
    return helper


def __getattr__(name: str) -> Any:
    if name != "HF_AVAILABLE" and name not in _HELPERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"amb_core.hf_utils.{name} was removed in {SINCE}: {_INSTEAD}", DeprecationWarning, stacklevel=2
    )
    return False if name == "HF_AVAILABLE" else _removed(name)


__all__ = list(_HELPERS)
