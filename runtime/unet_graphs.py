"""The U-Net as the defence calls it, eps(x, t), over the graphs a bundle carries for it.

A bundle has a general graph (inputs x and t) and may have graphs with one timestep folded in (input x only),
per precision. Within a call every candidate shares the timestep, so a folded graph serves the whole batch.
Which graphs run is a choice made once, when the Defender is built:

- 'folded': a folded graph for every timestep the settings use, or a ValueError naming the missing ones;
- 'general': the general graph for every timestep (the only graph that takes any timestep);
- 'auto': folded where the bundle has the timestep, the general graph elsewhere (a fallback the user asked for).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

UNetGraphs = Literal["folded", "general", "auto"]
Precision = Literal["float32", "int8"]
UNET_GRAPHS = ("folded", "general", "auto")
PRECISIONS = ("float32", "int8")


def choose_graphs(
    available: dict[int, str], timesteps: Iterable[int], unet_graphs: str, precision: str
) -> dict[int, str]:
    """The folded graph file to run at each timestep that has one chosen (the rest run the general graph).

    available: timestep -> file name of the bundle's folded graphs in this precision."""
    if unet_graphs not in UNET_GRAPHS:
        raise ValueError(f"Expected unet_graphs {' or '.join(map(repr, UNET_GRAPHS))}, but got {unet_graphs!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"Expected precision {' or '.join(map(repr, PRECISIONS))}, but got {precision!r}.")
    timesteps = sorted({int(t) for t in timesteps}, reverse=True)
    if unet_graphs == "general":
        if precision != "float32":
            raise ValueError(
                f"The general U-Net graph is float32 only; precision {precision!r} needs unet_graphs='folded'."
            )
        return {}
    missing = [t for t in timesteps if t not in available]
    if missing and (unet_graphs == "folded" or precision != "float32"):
        have = sorted(available, reverse=True)
        raise ValueError(
            f"Expected {precision} U-Net graphs with the timestep folded in for timesteps {timesteps} (these settings"
            f"), but the bundle has them for {have or 'none'}; missing {missing}. Export a bundle for these settings "
            "(tools/export.py --preset), or pass unet_graphs='general' (float32) or 'auto' to run the general graph "
            "where one is missing."
        )
    return {t: available[t] for t in timesteps if t in available}


class TimestepUNet:
    """eps(x, t) with t (N,) int64, all equal: the folded runner for that timestep, else the general runner.

    folded: timestep -> runner of a folded graph (run(x)); general: the general graph's runner (run(x, t)), None
    where every timestep the settings use has a folded graph."""

    def __init__(self, folded: dict[int, object], general: object | None) -> None:
        self.folded = folded
        self.general = general

    @property
    def name(self) -> str:
        kinds = [f"t={t}: {getattr(r, 'name', 'folded')}" for t, r in sorted(self.folded.items(), reverse=True)]
        return ", ".join(kinds) if kinds else "general graph"

    @property
    def provider(self) -> str:
        """The execution provider its runners use (all are made with the same backend options)."""
        return next(iter([*self.folded.values(), self.general])).provider

    def run(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        timestep = int(t[0])
        runner = self.folded.get(timestep)
        if runner is not None:
            if not (t == timestep).all():
                raise ValueError(f"Expected one timestep for the whole batch, but got {sorted(set(t.tolist()))}.")
            return runner.run(x)
        if self.general is None:
            raise ValueError(f"No U-Net graph was loaded for timestep {timestep}.")
        return self.general.run(x, t)

    def close(self) -> None:
        for runner in [*self.folded.values(), self.general]:
            if hasattr(runner, "close"):
                runner.close()
