"""Bulk defence on Ray: the runtime over Ray Data, with a Defender actor per worker.

The local `diffdefense defend` calls its Defender once per --batch-size images of each file, and a call's random
draws depend on its images' places in it (diffdefense/draws.py). So the unit of work shipped to the workers is that
same call: its images, padded to the batch size, with the file and the first index. Each worker's Defender makes the
same calls and so gives the local run's results, bit for bit, however the calls are spread. The bundle travels by
path and each worker's load_bundle checks its files against the manifest's sha256; onnxruntime runs as many threads
as the worker has CPUs, as does the fused steps' OpenMP (Ray sets a worker's OMP_NUM_THREADS to its CPUs). Ray Data
retries the calls of a worker that dies on a new one; the driver writes each result once, in the inputs' order, as
it arrives.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffdefense.cluster.connect import check_workers, import_ray
from diffdefense.cluster.shards import RECONSTRUCTION, ShardWriter, prepare_folder, write_summary
from diffdefense.runtime.backends import BackendOptions
from diffdefense.runtime.inputs import ImageFile
from diffdefense.settings import DefenseSettings

IMAGES_PER_BLOCK = 32  # Ray Data's unit of scheduling: small enough that workers finish close together
DEFAULT_SHARD_SIZE = 10_000


@dataclass(frozen=True)
class DefenderSpec:
    """Every choice of the driver's Defender, so that each worker builds the same one with its own threads."""

    bundle: str
    settings: DefenseSettings
    threshold: float | None
    backend: BackendOptions
    precision: str
    unet_graphs: str

    @classmethod
    def of(cls, defender) -> DefenderSpec:
        return cls(
            str(defender.bundle.root),
            defender.settings,
            defender.threshold,
            defender.backend,
            defender.precision,
            defender.unet_graphs,
        )

    def build(self, threads: int):
        from diffdefense.runtime.defender import Defender

        backend = dataclasses.replace(self.backend, threads=threads)
        return Defender(
            self.bundle,
            self.settings,
            threshold=self.threshold,
            backend=backend,
            precision=self.precision,
            unet_graphs=self.unet_graphs,
        )


class DefendCalls:
    """Ray Data's callable class: a batch of calls in, a row per image out. on_call(file_id, start), if given, runs
    before each call (tests use it to kill a worker)."""

    def __init__(self, spec: DefenderSpec, threads: int, reconstructions: bool, on_call: Callable | None = None):
        self.defender = spec.build(threads)
        self.reconstructions = reconstructions
        self.on_call = on_call

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for file_id, start, count, images in zip(
            batch["file_id"], batch["start"], batch["count"], batch["images"], strict=True
        ):
            if self.on_call is not None:
                self.on_call(int(file_id), int(start))
            result = self.defender(images[:count])
            part = {
                "file_id": np.full(count, file_id, dtype=np.int64),
                "index": np.arange(start, start + count, dtype=np.int64),
                "label": result.labels.astype(np.int64),
                "probability": result.probabilities[np.arange(count), result.labels],
                "reconstruction_error": result.reconstruction_error,
                "detection_score": result.detection_score,
                "attack_flag": result.attack_flag,
            }
            if self.reconstructions:
                part[RECONSTRUCTION] = result.reconstructions
            parts.append(part)
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def plan_calls(files: Sequence[ImageFile], batch_size: int) -> list[dict]:
    """The local command's Defender calls, as Ray Data rows: file_id, start, count, and the images padded with zeros
    to batch_size (one tensor shape for every row)."""
    calls = []
    for file_id, file in enumerate(files):
        for start in range(0, len(file.images), batch_size):
            images = file.images[start : start + batch_size]
            padded = np.zeros((batch_size, *images.shape[1:]), dtype=np.float32)
            padded[: len(images)] = images
            calls.append({"file_id": file_id, "start": start, "count": len(images), "images": padded})
    return calls


def defend_on_ray(
    spec: DefenderSpec,
    files: Sequence[ImageFile],
    names: Sequence[str],
    out_dir: Path,
    *,
    batch_size: int = 8,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    file_format: str = "parquet",
    reconstructions: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    label_names: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
    on_call: Callable | None = None,
) -> dict:
    """Defend every image of files (named by names) on the connected Ray cluster, writing shards and summary.json
    into out_dir (new or empty); returns the summary. workers: Defender actors of cpus_per_worker CPUs each, as many
    as the cluster holds if None. progress(done, total) after each block of results."""
    ray = import_ray()
    if len(files) != len(names):
        raise ValueError(f"Expected a name per file, but got {len(names)} names for {len(files)} files.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected a batch size of at least 1, but got {batch_size!r}.")
    workers = check_workers(ray, workers, cpus_per_worker)
    out_dir = prepare_folder(out_dir)
    writer = ShardWriter(out_dir, file_format, shard_size)  # checks the format before any work
    calls = plan_calls(files, batch_size)
    if not calls:
        raise ValueError("Expected images to defend, but the inputs hold none.")
    total = sum(len(file.images) for file in files)
    calls_per_block = max(1, IMAGES_PER_BLOCK // batch_size)
    workers = min(workers, math.ceil(len(calls) / calls_per_block))  # no actor without a block to defend
    started, done, flagged = time.perf_counter(), 0, 0
    work = (spec, cpus_per_worker, reconstructions, on_call)
    for block in _defended_blocks(ray, calls, calls_per_block, workers, work):
        writer.add(_with_file_columns(block, files, names, label_names))
        done, flagged = done + len(block["index"]), flagged + int(block["attack_flag"].sum())
        if progress is not None:
            progress(done, total)
    shards = writer.close()
    if done != total:  # every call's rows exactly once, retried calls included
        raise RuntimeError(f"Expected results for {total} images, but the workers returned {done}.")
    seconds = time.perf_counter() - started
    summary = {
        "images": total,
        "flagged": flagged,
        "files": list(map(str, names)),
        "bundle": spec.bundle,
        "settings": spec.settings.to_dict(),
        "threshold": spec.threshold,
        "batch_size": batch_size,
        "workers": workers,
        "cpus_per_worker": cpus_per_worker,
        "seconds": round(seconds, 3),
        "images_per_second": round(total / seconds, 3) if seconds > 0 else None,
        "format": file_format,
        "shards": shards,
        "image_shape": list(files[0].images.shape[1:]) if files else [],
        "reconstructions": reconstructions,
    }
    write_summary(out_dir, summary)
    return summary


def _defended_blocks(ray, calls, calls_per_block, workers, work):
    """Blocks of per-image results, in the calls' order, as the workers finish them. work: DefendCalls' arguments
    (spec, cpus_per_worker, reconstructions, on_call)."""
    with warnings.catch_warnings():  # Ray 2.60's DataContext, when first made, warns about its own deprecated fields
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    # A dataset takes the context as it is when it is made: results in the inputs' order, and no progress bars
    # (the caller reports progress).
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    try:
        dataset = ray.data.from_items(calls, override_num_blocks=math.ceil(len(calls) / calls_per_block))
        defended = dataset.map_batches(
            DefendCalls,
            fn_constructor_args=work,
            batch_size=calls_per_block,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=work[1],
        )
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
    ray_data_log = logging.getLogger("ray.data")
    level = ray_data_log.level
    ray_data_log.setLevel(logging.ERROR)  # Ray Data's notes on each execution; the caller reports progress
    try:
        yield from defended.iter_batches(batch_size=None, batch_format="numpy")
    finally:
        ray_data_log.setLevel(level)


def _with_file_columns(block, files, names, label_names) -> dict[str, np.ndarray]:
    """A block of results with the file's name, the label's name and the file's true label and attack mark (-1 where
    the file has none) beside each row."""
    file_ids, index = block.pop("file_id"), block["index"]
    images = {RECONSTRUCTION: block.pop(RECONSTRUCTION)} if RECONSTRUCTION in block else {}
    truth = np.array([_per_image(files[f].labels, i) for f, i in zip(file_ids, index, strict=True)], dtype=np.int64)
    attacked = np.array([_per_image(files[f].attacked, i) for f, i in zip(file_ids, index, strict=True)], np.int8)
    names_of_labels = np.asarray(label_names, dtype=str) if len(label_names) else None
    return {
        "path": np.asarray([str(names[f]) for f in file_ids], dtype=str),
        **block,
        **({"label_name": names_of_labels[block["label"]]} if names_of_labels is not None else {}),
        "true_label": truth,
        "attacked": attacked,
        **images,
    }


def _per_image(values: np.ndarray | None, i: int) -> int:
    return -1 if values is None else int(values[i])
