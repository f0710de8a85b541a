"""One Defender call's peak resident memory, measured in this process: the child that tools/memory_table.py starts
afresh for each row.

    python -m diffdefense.runtime.memory_probe '{"batch": 64, "preset": "default", "gradient": "straight-through",
        "max_batch": null, "memory_budget": null, "save": null, "fields": []}'

Loads the shipped MNIST bundle, defends one image (so that the models are loaded and onnxruntime's buffers made),
then defends the batch (the shipped samples repeated) in one call; prints one JSON line with the peak resident set
size (ru_maxrss) before and after that call. With "save", writes the result's "fields" there as .npy files.
Only what the measurement needs is imported, so that the readings are the Defender's.
"""

import json
import resource
import sys
import time

import numpy as np

from diffdefense.runtime.chunking import chunk_bounds, images_per_chunk
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import SAMPLES_DIR, bundle_dir


def measure_one_call(options: dict) -> dict:
    settings = PRESETS[options["preset"]].with_(gradient=options["gradient"])
    defender = Defender(bundle_dir("mnist"), settings)
    pool = np.load(SAMPLES_DIR / "mnist.npz")["images"]
    images = np.resize(pool, (options["batch"], *pool.shape[1:]))
    cut = {"max_batch": options["max_batch"], "memory_budget": options["memory_budget"]}
    defender(images[:1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = defender(images, **cut)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if options["save"]:
        for field in options["fields"]:
            np.save(f"{options['save']}/{field}.npy", getattr(result, field))
    size = images_per_chunk(settings, defender.image_shape, **cut)
    return {
        "before_mib": before / 1024, "peak_mib": peak / 1024, "seconds": seconds,  # ru_maxrss is in KiB on Linux
        "images_per_chunk": size, "chunks": len(chunk_bounds(len(images), size)),
        "candidates": options["batch"] * settings.num_candidates,
    }  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(measure_one_call(json.loads(sys.argv[1]))))
