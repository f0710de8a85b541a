"""Defences side by side on the same images: Defense-GAN and DiffDefense under one harness.

The adversarial sets come from the evaluation's attack cache (reference/evaluation.py: the same images, seed and
classifiers, checked by the cache's identity), so every defence sees the same inputs. Each defence reconstructs
the first ``first`` images of the set in chunks; every chunk is cached with its wall time, so a stopped run resumes
and a longer one reuses what is done. Accuracy carries a 95 % Wilson interval; detection scores every defence by
its own reconstruction error against its clean scores.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffdefense import shipped
from diffdefense.data import load_dataset
from diffdefense.reference.adaptive import adaptive_budgets
from diffdefense.reference.attacks import ATTACKS, run_attack
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.defense_gan import PRESETS as GAN_PRESETS
from diffdefense.reference.defense_gan import DefenseGAN
from diffdefense.reference.detection import evaluate_detection
from diffdefense.reference.evaluation import ArrayCache, cached_adaptive, classifier_checksums, pick_indices, predict
from diffdefense.reference.intervals import accuracy_interval
from diffdefense.settings import PRESETS as DIFFDEFENSE_PRESETS
from diffdefense.training.loading import load_classifier, load_generator, load_unet
from diffdefense.training.shipping import model_file

# name -> (method, preset): every preset of both defences.
DEFENSES = {f"defense-gan:{p}": ("defense-gan", p) for p in GAN_PRESETS} | {
    f"diffdefense:{p}": ("diffdefense", p) for p in DIFFDEFENSE_PRESETS
}


@dataclass(frozen=True)
class BaselineRun:
    """num_images and seed name the attack cache's image set; first: how many of them each defence reconstructs;
    bpda_images: how many of those BPDA-PGD attacks through each defence (0: none), at each of bpda_eps."""

    defenses: tuple[str, ...] = ("defense-gan:cheap", "diffdefense:default")
    dataset: str = "mnist"
    num_images: int = 1000
    first: int = 200
    seed: int = 0
    attacks: tuple[str, ...] = ("FGSM", "PGD")
    chunk: int = 50
    bpda_images: int = 0
    bpda_eps: tuple[float, ...] = (0.3,)

    def __post_init__(self) -> None:
        unknown = [d for d in self.defenses if d not in DEFENSES]
        if unknown or not self.defenses:
            raise ValueError(f"Expected defences from {sorted(DEFENSES)}, but got {list(self.defenses)}.")
        if bad := sorted(set(self.attacks) - set(ATTACKS)):
            raise ValueError(f"Expected attacks from {sorted(ATTACKS)}, but got {bad}.")
        if not 1 <= self.first <= self.num_images:
            raise ValueError(f"Expected first between 1 and num_images ({self.num_images}), but got {self.first}.")
        if not 0 <= self.bpda_images <= self.first:
            raise ValueError(f"Expected bpda_images between 0 and first ({self.first}), but got {self.bpda_images}.")
        if self.chunk < 1:
            raise ValueError(f"Expected a chunk of at least 1 image, but got {self.chunk}.")


class Reconstructor:
    """One defence as the harness calls it: images (n, 1, 28, 28) and their keys -> (reconstructions, scores)."""

    def __init__(self, name: str, dataset: str) -> None:
        method, preset = DEFENSES[name]
        self.name, self.method, self.preset = name, method, preset
        if method == "defense-gan":
            self.settings = GAN_PRESETS[preset]
            self.defense = DefenseGAN(load_generator(dataset), self.settings)
            self.weights = model_file(dataset, "generator")
        else:
            self.settings = DIFFDEFENSE_PRESETS[preset]
            self.defense = ReferenceDefense(*load_unet(dataset), self.settings)
            self.weights = model_file(dataset, "unet")

    def __call__(self, images: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(images)
        result = self.defense.reconstruct(x, keys) if self.method == "defense-gan" else self.defense.reconstruct(x)
        return result.images.numpy(), result.errors.numpy()

    def identity(self) -> dict:
        sha = shipped.read_manifest()["files"][self.weights]["sha256"]
        return {"defense": self.name, "settings": self.settings.to_dict(), "weights_sha256": sha}


def reconstruct_set(
    defense: Reconstructor, cache: ArrayCache, tag: str, inputs: np.ndarray, chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reconstructions, scores, seconds per image) of inputs, chunk by chunk; a chunk's row holds its pixels, its
    score and the chunk's wall time per image, measured when the chunk was computed."""

    def compute(start: int, stop: int) -> np.ndarray:
        began = time.perf_counter()
        images, scores = defense(inputs[start:stop], np.arange(start, stop))
        per_image = (time.perf_counter() - began) / (stop - start)
        return np.concatenate(
            [images.reshape(stop - start, -1), scores[:, None], np.full((stop - start, 1), per_image)], axis=1
        ).astype(np.float32)

    rows = np.concatenate(
        [
            cache.get(f"defended_{tag}_{start}_{stop}", lambda a=start, b=stop: compute(a, b))
            for start in range(0, len(inputs), chunk)
            for stop in [min(start + chunk, len(inputs))]
        ]
    )
    return rows[:, :-2].reshape(inputs.shape), rows[:, -2], rows[:, -1]


def accuracy_entry(correct: np.ndarray) -> dict:
    accuracy = float(correct.mean())
    low, high = accuracy_interval(accuracy, len(correct))
    return {"accuracy": accuracy, "interval_95": [low, high]}


def bpda_entry(run, eps, defense, cache, classifier, images, labels, clean_scores) -> tuple[str, dict]:
    """BPDA-PGD through this defence on the first bpda_images images (the evaluation's budget: 20 steps); the
    attacked set depends on the defence, so it is cached with the defence's reconstructions."""
    n, budget = run.bpda_images, adaptive_budgets(eps)[0]
    name = f"adversarial_bpda_eps_{eps}_steps_{budget.steps}_first_{n}"
    x = cached_adaptive(cache, name, budget, classifier, defense.defense, images[:n], labels[:n], run.seed)
    recon, scores, seconds = reconstruct_set(defense, cache, f"bpda_eps_{eps}_first_{n}", x, run.chunk)
    detection = evaluate_detection(clean_scores, scores)
    return f"BPDA-PGD eps {eps} (first {n})", accuracy_entry(predict(classifier, recon) == labels[:n]) | {
        "accuracy_no_defense": float((predict(classifier, x) == labels[:n]).mean()),
        "mean_score": float(scores.mean()),
        "seconds_per_image": float(seconds.mean()),
        "detection_auroc": detection.auroc,
        "detection_rate_at_5pct_fpr": detection.detection_rate,
        "budget": budget.to_dict(),
    }


def run_baseline(run: BaselineRun, cache_dir: Path, attack_cache: Path, data_root: Path | None = None) -> dict:
    """cache_dir: where each defence's folder of cached reconstructions goes (a chunk's name holds its image range,
    so runs with another ``first`` share it)."""
    started = time.perf_counter()
    test = load_dataset(run.dataset, "test", data_root)
    indices = pick_indices(len(test), run.num_images, run.seed)
    inputs = {"dataset": run.dataset, "indices": indices.tolist(), "seed": run.seed}
    attacks = ArrayCache(attack_cache, inputs)
    attacks.pin("classifiers", classifier_checksums(run.dataset))
    images, labels = (t.numpy() for t in test.subset(indices).as_tensors())
    classifier = load_classifier(run.dataset, "model_a")

    def adversarial(attack: str) -> np.ndarray:
        return attacks.get(
            f"adversarial_white_box_{attack}",
            lambda: run_attack(
                attack, classifier, torch.from_numpy(images), torch.from_numpy(labels), seed=run.seed
            ).numpy(),
        )[: run.first]

    sets = {"clean": images[: run.first]} | {attack: adversarial(attack) for attack in run.attacks}
    truth = labels[: run.first]
    results = {
        name: {"no_defense": accuracy_entry(predict(classifier, x) == truth), "defenses": {}}
        for name, x in sets.items()
    }
    described = {}
    for name in run.defenses:
        defense = Reconstructor(name, run.dataset)
        described[name] = defense.identity()
        identity = {**inputs, **described[name], "chunk": run.chunk}
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        cache = ArrayCache(cache_dir / f"{name.replace(':', '-')}-{key}", identity)
        clean_scores = None
        for set_name, x in sets.items():
            recon, scores, seconds = reconstruct_set(defense, cache, set_name, x, run.chunk)
            entry = accuracy_entry(predict(classifier, recon) == truth)
            entry |= {"mean_score": float(scores.mean()), "seconds_per_image": float(seconds.mean())}
            if set_name == "clean":
                clean_scores = scores
            else:
                detection = evaluate_detection(clean_scores, scores)
                entry |= {"detection_auroc": detection.auroc, "detection_rate_at_5pct_fpr": detection.detection_rate}
            results[set_name]["defenses"][name] = entry
        for eps in run.bpda_eps if run.bpda_images else ():
            row, entry = bpda_entry(run, eps, defense, cache, classifier, images, labels, clean_scores)
            results.setdefault(row, {"no_defense": None, "defenses": {}})["defenses"][name] = entry
    return {
        "dataset": run.dataset,
        "data": f"{test.name}: the first {run.first} of {run.num_images} images chosen with seed {run.seed}",
        "attack_cache": str(attack_cache),
        "attacks": {a: ATTACKS[a].settings for a in run.attacks},
        "defenses": described,
        "chunk": run.chunk,
        "results": results,
        "torch_threads": torch.get_num_threads(),
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
    }
