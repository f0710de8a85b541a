"""The evaluation behind the report: clean and attacked accuracy with and without the defence, and detection.

Every expensive array (adversarial examples, reconstructions) is cached as .npz in the report folder
(read back with allow_pickle=False), so an interrupted run resumes where it stopped. The adversarial sets depend
on the images, the seed and the classifiers but not on the defence, so runs of other presets may share one folder
of them (``attack_cache``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffdefense import shipped
from diffdefense.data import load_dataset
from diffdefense.detection_threshold import refined_l1
from diffdefense.evaluation_config import EvaluationConfig
from diffdefense.reference.adaptive import AdaptiveBudget, adaptive_budgets, run_adaptive
from diffdefense.reference.attacks import ATTACKS, run_attack
from diffdefense.reference.batch_checkpoints import BatchCheckpoints
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.detection import evaluate_detection
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.shipping import model_file


class ArrayCache:
    """Named float32 arrays in one folder; a present file is reused, a missing one is computed and saved.

    identity: what the arrays depend on. A folder made for something else is refused rather than reused.
    """

    def __init__(self, folder: Path, identity: dict) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        identity = json.loads(json.dumps(identity))  # the form it takes on disk (tuples become lists)
        stamp = folder / "identity.json"
        if stamp.is_file():
            saved = json.loads(stamp.read_text())
            if saved != identity:
                differ = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
                raise ValueError(f"The cache in {folder} was made for other {', '.join(differ)}; use another folder.")
        else:
            stamp.write_text(json.dumps(identity))

    def pin(self, name: str, value: dict) -> None:
        """Record one more thing the arrays depend on, in its own file, so that folders made before it was recorded
        stay usable: the first use writes it, a later one that differs is refused."""
        value = json.loads(json.dumps(value))
        stamp = self.folder / f"{name}.json"
        if stamp.is_file() and json.loads(stamp.read_text()) != value:
            raise ValueError(
                f"The cache in {self.folder} was made for other {name} ({stamp} records {stamp.read_text()}, "
                f"this run has {json.dumps(value)}); use another cache folder."
            )
        stamp.write_text(json.dumps(value))

    def load(self, name: str) -> np.ndarray:
        """An array that must already be there."""
        with np.load(self.folder / f"{name}.npz", allow_pickle=False) as stored:
            return stored["array"]

    def get(self, name: str, compute) -> np.ndarray:
        path = self.folder / f"{name}.npz"
        if path.is_file():
            return self.load(name)
        array = np.asarray(compute())
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, array=array)
        tmp.replace(path)
        self.checkpoints(name).clear()  # the whole array is stored: its batches are no longer needed
        return array

    def checkpoints(self, name: str) -> BatchCheckpoints:
        """Where a long computation of the array `name` keeps its finished batches until the whole array is stored."""
        return BatchCheckpoints(self.folder / f"{name}.batches")


def cached_adaptive(
    cache: ArrayCache, name: str, budget: AdaptiveBudget, classifier, defense, images: np.ndarray, labels, seed: int
) -> np.ndarray:
    """The adaptive attack's images from the cache, or attacked (resuming from the batches a stopped run finished)."""
    return cache.get(
        name,
        lambda: run_adaptive(
            budget,
            classifier,
            defense,
            torch.from_numpy(images),
            torch.from_numpy(labels),
            seed,
            checkpoints=cache.checkpoints(name),
        ).numpy(),
    )


def pick_indices(total: int, count: int, seed: int) -> np.ndarray:
    """A seeded subset of test indices, sorted."""
    if not 0 < count <= total:
        raise ValueError(f"Expected between 1 and {total} images, but got {count}.")
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [
                model(torch.from_numpy(images[i : i + batch_size])).argmax(1).numpy()
                for i in range(0, len(images), batch_size)
            ]
        )


def binarized(images: np.ndarray) -> np.ndarray:
    """Pixels thresholded at 0.5: the no-diffusion baseline that shows how much of a defence against L-inf
    0.3 attacks on MNIST's nearly binary digits thresholding alone gives."""
    return (images > 0.5).astype(np.float32)


def defend(defense: ReferenceDefense, images: np.ndarray, batch_size: int, label: str) -> np.ndarray:
    """(N, 1, 28, 28) -> array (N, 785): the reconstruction, flattened, then its loss (the detection score)."""
    rows = []
    for i in tqdm(range(0, len(images), batch_size), desc=f"defend {label}", leave=False, disable=None):
        result = defense.reconstruct(torch.from_numpy(images[i : i + batch_size]))
        rows.append(np.concatenate([result.images.flatten(1).numpy(), result.errors[:, None].numpy()], axis=1))
    return np.concatenate(rows).astype(np.float32)


def classifier_checksums(dataset: str) -> dict[str, str]:
    """The sha256 of the classifier files that load_classifier checks against, by architecture."""
    files = shipped.read_manifest()["files"]
    for arch in ("model_a", "model_b"):
        if model_file(dataset, arch) not in files:
            raise FileNotFoundError(
                f"Evaluating {dataset} needs Model A and Model B, but {model_file(dataset, arch)} is not in the "
                f"weights folder {shipped.weights_root()}: train it with `diffdefense train classifier --dataset "
                f"{dataset} --arch {arch} --out DIR`."
            )
    return {arch: files[model_file(dataset, arch)]["sha256"] for arch in ("model_a", "model_b")}


def open_caches(
    config: EvaluationConfig, out_dir: Path, indices: np.ndarray, attack_cache: Path | None = None
) -> tuple[ArrayCache, ArrayCache]:
    """The cache of adversarial sets (attack_cache, default the report's cache/attacks) and the defence's."""
    # Attacks depend on the images and seed; reconstructions on those and on the defence settings too.
    inputs = {"dataset": config.dataset, "indices": indices.tolist(), "seed": config.seed}
    attacks_cache = ArrayCache(attack_cache or out_dir / "cache" / "attacks", inputs)
    attacks_cache.pin("classifiers", classifier_checksums(config.dataset))
    settings_id = hashlib.sha256(json.dumps(config.settings.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    # Reconstructions depend on the U-Net too; the GroupNorm net keeps the folder name it had before the choice.
    defense_id = settings_id if config.unet == "unet" else f"{config.unet}-{settings_id}"
    cache = ArrayCache(out_dir / "cache" / f"defense-{defense_id}", {**inputs, "settings": config.settings.to_dict()})
    # ... and on the U-Net's weights: retrained weights shipped under the same name get no stale reconstructions.
    unet_file = model_file(config.dataset, config.unet)
    cache.pin("unet", {config.unet: shipped.read_manifest()["files"].get(unet_file, {}).get("sha256")})
    return attacks_cache, cache


def attack_sources(config: EvaluationConfig) -> list[tuple[str, str]]:
    """(setting, the classifier attacked) of each adversarial set: white-box on Model A, black-box from Model B."""
    return [("white_box", "model_a")] + ([("black_box", "model_b")] if config.black_box else [])


def adaptive_tag(budget: AdaptiveBudget) -> str:
    """The whole budget in the name, so a cached attack is never reused for another budget (PGD's tags keep the
    form they had before there were other adaptive attacks)."""
    attack = "" if budget.attack == "PGD" else f"{budget.attack}_"
    return f"adaptive_{attack}{budget.gradient}_eps_{budget.eps}_steps_{budget.steps}_eot_{budget.eot_iter}"


def run_evaluation(
    config: EvaluationConfig, out_dir: Path, data_root: Path | None = None, attack_cache: Path | None = None
) -> dict:
    """attack_cache: folder of adversarial sets to read and add to (default: the report's cache/attacks)."""
    unknown = set(config.attacks) - set(ATTACKS)
    if unknown:
        raise ValueError(f"Expected attacks from {sorted(ATTACKS)}, but got {sorted(unknown)}.")
    started = time.perf_counter()
    test = load_dataset(config.dataset, "test", data_root)
    indices = pick_indices(len(test), config.num_images, config.seed)
    attacks_cache, cache = open_caches(config, out_dir, indices, attack_cache)
    images, labels = (t.numpy() for t in test.subset(indices).as_tensors())
    model_a, model_b = load_classifier(config.dataset, "model_a"), load_classifier(config.dataset, "model_b")
    unet, schedule = load_unet(config.dataset, name=config.unet)
    defense = ReferenceDefense(unet, schedule, config.settings)
    shape = images.shape[1:]

    def defended(name: str, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = cache.get(f"defended_{name}", lambda: defend(defense, inputs, config.batch_size, name))
        return rows[:, :-1].reshape(-1, *shape), rows[:, -1]

    clean_recon, clean_scores = defended("clean", images)
    clean_l1 = refined_l1(images, clean_recon)
    results = {
        "clean": {
            "accuracy_no_defense": float((predict(model_a, images) == labels).mean()),
            "accuracy_defended": float((predict(model_a, clean_recon) == labels).mean()),
            "accuracy_defended_model_b": float((predict(model_b, clean_recon) == labels).mean()),
            "accuracy_binarized": float((predict(model_a, binarized(images)) == labels).mean()),
            "mean_score": float(clean_scores.mean()),
        },
        "white_box": {},
        "black_box": {},
    }
    curves = {}
    models = {"model_a": model_a, "model_b": model_b}
    settings = [(setting, models[arch]) for setting, arch in attack_sources(config)]
    for attack in tqdm(config.attacks, desc="attacks", disable=None):
        for setting, source in settings:
            tag = f"{setting}_{attack}"
            adversarial = attacks_cache.get(
                f"adversarial_{tag}",
                lambda s=source, a=attack: run_attack(
                    a, s, torch.from_numpy(images), torch.from_numpy(labels), seed=config.seed
                ).numpy(),
            )
            recon, scores = defended(tag, adversarial)
            detection = evaluate_detection(clean_scores, scores)
            by_l1 = evaluate_detection(clean_l1, refined_l1(adversarial, recon))
            curves[tag] = (detection.fpr, detection.tpr)
            results[setting][attack] = {
                "accuracy_no_defense": float((predict(model_a, adversarial) == labels).mean()),
                "accuracy_defended": float((predict(model_a, recon) == labels).mean()),
                # Another classifier on the same reconstructions: what survives the defence that was made for Model A
                "accuracy_defended_model_b": float((predict(model_b, recon) == labels).mean()),
                "accuracy_binarized": float((predict(model_a, binarized(adversarial)) == labels).mean()),
                "detection_auroc": detection.auroc,
                "detection_rate_at_5pct_fpr": detection.detection_rate,
                # the runtime's score (diffdefense/detection_threshold.py); the two above are the paper's, best_mse
                "detection_auroc_refined_l1": by_l1.auroc,
                "detection_rate_at_5pct_fpr_refined_l1": by_l1.detection_rate,
                "threshold": detection.threshold,
                "clean_fpr": detection.clean_fpr,
                "linf_perturbation": float(np.abs(adversarial - images).max()),
                "mean_score": float(scores.mean()),
                "attack_settings": ATTACKS[attack].settings,
            }
    if config.adaptive_images:
        # Adaptive attacks go through the defence, so they belong with its settings.
        results["adaptive"] = _adaptive(config, cache, model_a, defense, images, labels, defended)
    record = {
        "dataset": config.dataset,
        "data": f"{test.name}, {len(indices)} images chosen with seed {config.seed}"
        + (
            " (KMNIST: held-out part of the project's split of the official test images)"
            if config.dataset == "kmnist"
            else ""
        ),
        "indices": indices.tolist(),
        "seed": config.seed,
        "preset": config.preset,
        "unet": config.unet,
        "settings": config.settings.to_dict(),
        "unet_evaluations_per_input": config.settings.unet_evaluations,
        "results": results,
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "torchattacks": __import__("torchattacks").__version__,
        },
        "config": {k: v for k, v in asdict(config).items() if k != "settings"},
    }
    return {"record": record, "curves": curves, "examples": _examples(images, attacks_cache, cache, config, shape)}


def chosen_adaptive_budgets(config: EvaluationConfig) -> list[AdaptiveBudget]:
    """The adaptive attacks a run makes: each chosen attack with each chosen gradient at each eps; none when
    adaptive_images is 0. Their names are the report's rows."""
    if not config.adaptive_images:
        return []
    return [
        budget
        for eps in config.adaptive_eps
        for budget in adaptive_budgets(
            eps, config.adaptive_steps, config.eot_iter, config.adaptive_attacks, config.adaptive_gradients
        )
    ]


def rows_a_run_would_drop(out_dir: Path, config: EvaluationConfig) -> list[str]:
    """The rows of out_dir's results.json that a run of config would not write again.

    A report folder is rewritten whole, and the adversarial sets behind a dropped row may have gone with a cache
    that is never committed, so the CLI refuses such a run before it starts."""
    path = out_dir / "results.json"
    if not path.is_file():
        return []
    try:
        results = json.loads(path.read_text())["results"]
        written = {
            "white_box": set(config.attacks),
            "black_box": set(config.attacks) if config.black_box else set(),
            "adaptive": {budget.name for budget in chosen_adaptive_budgets(config)},
        }
        return [f"{part} {row}" for part, rows in written.items() for row in results.get(part) or {} if row not in rows]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"Expected {path} to be a report's results.json, but it could not be read: {err!r}") from err


def _adaptive(config, cache, classifier, defense, images, labels, defended) -> dict:
    n = min(config.adaptive_images, len(images))
    out = {}
    for budget in chosen_adaptive_budgets(config):
        tag = adaptive_tag(budget)
        adversarial = cached_adaptive(
            cache, f"adversarial_{tag}", budget, classifier, defense, images[:n], labels[:n], config.seed
        )
        recon, _ = defended(tag, adversarial)
        out[budget.name] = {
            "images": n,
            "budget": budget.to_dict(),
            "accuracy_no_defense": float((predict(classifier, adversarial) == labels[:n]).mean()),
            "accuracy_defended": float((predict(classifier, recon) == labels[:n]).mean()),
        }
    return out


def _examples(
    images: np.ndarray, attacks_cache: ArrayCache, cache: ArrayCache, config: EvaluationConfig, shape
) -> dict:
    """First images: input, white-box adversarial and reconstruction per attack, for the grid figure."""
    n = min(8, len(images))
    examples = {"input": images[:n]}
    for attack in config.attacks:
        tag = f"white_box_{attack}"
        examples[f"{attack} adversarial"] = attacks_cache.load(f"adversarial_{tag}")[:n]
        examples[f"{attack} reconstruction"] = cache.load(f"defended_{tag}")[:n, :-1].reshape(-1, *shape)
    return examples
