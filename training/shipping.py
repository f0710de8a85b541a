"""Writing a trained model as safetensors with its training record, and registering both in the manifest."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffdefense import shipped


def model_file(dataset: str, name: str) -> str:
    return f"{dataset}/{name}.safetensors"


def record_file(dataset: str, name: str) -> str:
    return f"{dataset}/{name}.json"


def save_weights(state_dict: dict, path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata=metadata)


def ship(
    state_dict: dict, dataset: str, name: str, record: dict, metadata: dict[str, str], weights_dir: Path | None = None
) -> Path:
    """Write weights and record into the weights folder (default: ``shipped.weights_root()``, the shipped folder
    unless ``$DIFFDEFENSE_WEIGHTS`` names another) and update its manifest."""
    weights_dir = weights_dir or shipped.weights_root()
    record = {**record, "versions": {"torch": torch.__version__, "python": platform.python_version()}}
    weights = weights_dir / model_file(dataset, name)
    save_weights(state_dict, weights, metadata)
    (weights_dir / record_file(dataset, name)).write_text(json.dumps(record, indent=2) + "\n")
    shipped.add_files([model_file(dataset, name), record_file(dataset, name)], weights_dir)
    return weights
