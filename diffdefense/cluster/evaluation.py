"""The evaluation on Ray: its attacks and defences run as Ray tasks that fill run_evaluation's caches, then
run_evaluation itself finds every array cached and only measures, so the results are the single-process run's.

Each array is cut where the single-process run's own randomness allows, so that every piece is computed exactly as
it would be there:
- a defence into chunks of whole --batch-size batches: each batch draws its latents and noise from the settings'
  seed alone (diffdefense/draws.py);
- an attack into chunks of run_attack's batches (ATTACK_BATCH images) where each batch is seeded by itself
  (SEEDED_PER_BATCH); the others (PGD's random starts, EOT-PGD, the adaptive attacks) draw from torch's generator
  from one batch to the next, so each runs whole, in a task of its own.
Torch's float sums round differently when split over another number of threads, so a task runs as many threads as
the single-process run it is to equal (by default the driver's). Tasks that die are retried by Ray (MAX_RETRIES).
Each finished chunk is saved under the cache's parts/ by the driver, named by its images, so a rerun of an
interrupted run redoes only the chunks that were missing, and an array is put together from exactly one piece per
chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffdefense.cluster.connect import check_workers, import_ray
from diffdefense.evaluation_config import EvaluationConfig

ATTACK_BATCH = 250  # run_attack's batch size (its default, which the evaluation uses)
# Attacks whose batches do not depend on each other: deterministic (FGSM, DeepFool, EAD, CW-L2), or seeding torch's
# generator afresh at each call of the attack, i.e. at each batch (torchattacks' Square, APGD, and AutoAttack's
# APGD, APGD-T, FAB and Square). Checked by tests/test_cluster.py: chunked runs equal whole ones.
SEEDED_PER_BATCH = frozenset({"FGSM", "DeepFool", "Square", "AutoAttack", "EAD", "CW-L2", "APGD-CE", "APGD-DLR"})
MAX_RETRIES = 3  # a task whose worker dies is run again this many times


@dataclass
class ArrayJob:
    """One cached array, computed in chunks of its images by task(source, start, stop) -> object ref, where source is
    the object ref of the images it works on (an adversarial set's defence gets it once the set is complete).
    defence: for an adversarial set, the job that defends it."""

    cache: object  # reference.evaluation.ArrayCache
    name: str
    size: int
    chunk: int
    task: Callable[[object, int, int], object]
    source: object | None = None
    defence: ArrayJob | None = None
    parts: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def bounds(self) -> list[tuple[int, int]]:
        return [(start, min(start + self.chunk, self.size)) for start in range(0, self.size, self.chunk)]

    def part_path(self, bounds: tuple[int, int]) -> Path:
        return self.cache.folder / "parts" / f"{self.name}.{bounds[0]}-{bounds[1]}.npz"


def attack_chunk(attack: str, size: int) -> int:
    return ATTACK_BATCH if attack in SEEDED_PER_BATCH else size


def evaluate_on_ray(
    config: EvaluationConfig,
    out_dir: Path,
    data_root: Path | None = None,
    attack_cache: Path | None = None,
    *,
    cpus_per_task: int | None = None,
    batches_per_task: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    on_task: Callable[[str], None] | None = None,
) -> dict:
    """run_evaluation(config, out_dir, data_root, attack_cache), its arrays computed on the connected Ray cluster in
    tasks of cpus_per_task CPUs, each running torch with as many threads, a defence task defending batches_per_task
    batches. cpus_per_task None: the threads of a single-process run here (torch's default), whose results these
    then equal bit for bit (torch's sums round differently when split over another number of threads).
    progress(done, total, name) after each task; on_task(name) runs first in each task (tests use it to kill one)."""
    import torch

    from diffdefense.cluster import evaluation_tasks as tasks
    from diffdefense.data import load_dataset
    from diffdefense.reference.attacks import ATTACKS
    from diffdefense.reference.evaluation import (
        adaptive_tag,
        attack_sources,
        chosen_adaptive_budgets,
        open_caches,
        pick_indices,
        run_evaluation,
    )

    started = time.perf_counter()
    ray = import_ray()
    cpus_per_task = torch.get_num_threads() if cpus_per_task is None else cpus_per_task
    check_workers(ray, None, cpus_per_task)
    unknown = set(config.attacks) - set(ATTACKS)
    if unknown:
        raise ValueError(f"Expected attacks from {sorted(ATTACKS)}, but got {sorted(unknown)}.")
    if not isinstance(batches_per_task, int) or isinstance(batches_per_task, bool) or batches_per_task < 1:
        raise ValueError(f"Expected at least 1 batch per task, but got {batches_per_task!r}.")
    test = load_dataset(config.dataset, "test", data_root)
    indices = pick_indices(len(test), config.num_images, config.seed)
    attacks_cache, cache = open_caches(config, out_dir, indices, attack_cache)
    images, labels = (t.numpy() for t in test.subset(indices).as_tensors())
    n, adaptive_n = len(images), min(config.adaptive_images, len(images))
    options = {"num_cpus": cpus_per_task, "max_retries": MAX_RETRIES, "retry_exceptions": False}
    run = {name: ray.remote(**options)(getattr(tasks, name)) for name in ("attack", "adaptive", "defend")}
    images_ref, labels_ref = ray.put(images), ray.put(labels)

    def submit(kind: str, name: str, start: int, stop: int, *args):
        label = f"{name}[{start}:{stop}]"
        return run[kind].options(name=label).remote(*args, name=label, threads=cpus_per_task, on_task=on_task)

    def defence(tag: str, size: int, source=None) -> ArrayJob:
        def task(source, start, stop, name=f"defended_{tag}"):
            settings = (config.dataset, config.unet, config.settings)
            return submit("defend", name, start, stop, *settings, source, start, stop, config.batch_size)

        return ArrayJob(cache, f"defended_{tag}", size, config.batch_size * batches_per_task, task, source)

    jobs = [defence("clean", n, images_ref)]
    for attack in config.attacks:
        for setting, arch in attack_sources(config):
            tag = f"{setting}_{attack}"

            def task(source, start, stop, attack=attack, arch=arch, name=f"adversarial_{tag}"):
                args = (config.dataset, arch, attack, source, labels_ref, start, stop, config.seed)
                return submit("attack", name, start, stop, *args)

            job = ArrayJob(attacks_cache, f"adversarial_{tag}", n, attack_chunk(attack, n), task, images_ref)
            job.defence = defence(tag, n)
            jobs.append(job)
    for budget in chosen_adaptive_budgets(config):
        tag = adaptive_tag(budget)

        def task(source, start, stop, budget=budget, name=f"adversarial_{tag}"):
            args = (config.dataset, config.unet, config.settings, budget, source, labels_ref, stop, config.seed)
            return submit("adaptive", name, start, stop, *args)

        job = ArrayJob(cache, f"adversarial_{tag}", adaptive_n, adaptive_n, task, images_ref)
        job.defence = defence(tag, adaptive_n)
        jobs.append(job)
    run_jobs(ray, jobs, progress)
    evaluation = run_evaluation(config, out_dir, data_root, attack_cache)
    # run_evaluation timed only its own part, the measuring; the record's wall time is the whole run's
    evaluation["record"]["wall_seconds_this_run"] = round(time.perf_counter() - started, 1)
    return evaluation


def run_jobs(ray, jobs: list[ArrayJob], progress=None) -> None:
    """Every job's missing chunks as tasks, an adversarial set's defence as soon as the set is complete. Chunks saved
    by an earlier run (parts/) are read, not run again; a complete array goes into its cache and its parts away."""
    pending: dict[object, tuple[ArrayJob, tuple[int, int]]] = {}
    everything = jobs + [job.defence for job in jobs if job.defence is not None]
    counts = {"done": 0, "total": sum(len(_missing(job)) for job in everything)}

    def start(job: ArrayJob) -> None:
        if (job.cache.folder / f"{job.name}.npz").is_file():
            complete(job, lambda: job.cache.load(job.name))
            return
        missing = _missing(job)
        for bounds in job.bounds():
            if bounds in missing:
                pending[job.task(job.source, *bounds)] = (job, bounds)
            else:
                with np.load(job.part_path(bounds), allow_pickle=False) as stored:
                    job.parts[bounds] = stored["array"]
        if len(job.parts) == len(job.bounds()):
            finish(job)

    def finish(job: ArrayJob) -> None:
        array = job.cache.get(job.name, lambda: np.concatenate([job.parts[bounds] for bounds in job.bounds()]))
        for bounds in job.bounds():
            job.part_path(bounds).unlink(missing_ok=True)
        complete(job, lambda: array)

    def complete(job: ArrayJob, array: Callable[[], np.ndarray]) -> None:
        """An adversarial set is done: its defence starts, given the images only if it has chunks to compute."""
        if job.defence is not None:
            if _missing(job.defence):
                job.defence.source = ray.put(array())
            start(job.defence)

    for job in jobs:
        start(job)
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        job, bounds = pending.pop(ref)
        part = np.asarray(ray.get(ref))
        _save_part(job.part_path(bounds), part)
        job.parts[bounds] = part
        counts["done"] += 1
        if progress is not None:
            progress(counts["done"], counts["total"], f"{job.name}[{bounds[0]}:{bounds[1]}]")
        if len(job.parts) == len(job.bounds()):
            finish(job)


def _missing(job: ArrayJob) -> list[tuple[int, int]]:
    """The chunks of job that neither its cache nor its parts/ hold."""
    if (job.cache.folder / f"{job.name}.npz").is_file():
        return []
    return [bounds for bounds in job.bounds() if not job.part_path(bounds).is_file()]


def _save_part(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, array=array)
    tmp.replace(path)
