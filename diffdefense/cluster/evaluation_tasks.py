"""What the evaluation's Ray tasks run on a worker: one chunk of an attack or of a defence, computed by the same
functions and with the same seeds as the single-process evaluation. Models are loaded once per worker process."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from diffdefense.settings import DefenseSettings


@functools.cache
def _classifier(dataset: str, arch: str):
    from diffdefense.training.loading import load_classifier

    return load_classifier(dataset, arch)


@functools.cache
def _unet(dataset: str, name: str):
    from diffdefense.training.loading import load_unet

    return load_unet(dataset, name=name)


def _begin(name: str, threads: int, on_task: Callable[[str], None] | None) -> None:
    torch.set_num_threads(threads)  # the task's CPUs, not the node's
    if on_task is not None:
        on_task(name)


def attack(dataset, arch, attack_name, images, labels, start, stop, seed, *, name, threads, on_task) -> np.ndarray:
    """run_attack on images [start, stop), start a multiple of its batch (the chunk's batches are the whole run's)."""
    from diffdefense.reference.attacks import run_attack

    _begin(name, threads, on_task)
    model = _classifier(dataset, arch)
    chunk = (torch.from_numpy(np.array(images[start:stop])), torch.from_numpy(np.array(labels[start:stop])))
    return run_attack(attack_name, model, *chunk, seed=seed).numpy()


def adaptive(dataset, unet, settings: DefenseSettings, budget, images, labels, stop, seed, *, name, threads, on_task):
    """run_adaptive on the first stop images, through the defence with settings, against Model A."""
    from diffdefense.reference.adaptive import run_adaptive
    from diffdefense.reference.defense import ReferenceDefense

    _begin(name, threads, on_task)
    defense = ReferenceDefense(*_unet(dataset, unet), settings)
    chunk = (torch.from_numpy(np.array(images[:stop])), torch.from_numpy(np.array(labels[:stop])))
    return run_adaptive(budget, _classifier(dataset, "model_a"), defense, *chunk, seed).numpy()


def defend(dataset, unet, settings: DefenseSettings, images, start, stop, batch_size, *, name, threads, on_task):
    """The evaluation's defend on images [start, stop), start a multiple of batch_size: rows (N, pixels + 1)."""
    from diffdefense.reference.defense import ReferenceDefense
    from diffdefense.reference.evaluation import defend as defend_batches

    _begin(name, threads, on_task)
    defense = ReferenceDefense(*_unet(dataset, unet), settings)
    return defend_batches(defense, np.array(images[start:stop]), batch_size, name)
