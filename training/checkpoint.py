"""Per-epoch checkpoints that resume exactly, written atomically and read with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(out_dir: Path, state: dict) -> Path:
    """Write to a temporary name and rename, so an interruption never leaves half a checkpoint."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(out_dir: Path) -> dict | None:
    """The run's last checkpoint, or None if it has none. Never unpickles arbitrary objects."""
    path = out_dir / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def check_same_config(out_dir: Path, saved: dict, wanted: dict) -> None:
    """Resuming under other settings would silently mix two runs: refuse, naming what differs."""
    differ = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
        raise ValueError(
            f"The checkpoint in {out_dir} was made with other settings ({detail}); "
            "use the same settings or a new --out folder."
        )


def rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
