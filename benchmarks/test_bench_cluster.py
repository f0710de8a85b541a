"""Throughput of bulk defence (images/s) at the `default` preset: the plain local command against the same command on
a local Ray cluster with 1 and 2 Defender workers of 1 CPU each, and, to tell Ray's cost from the threads', the
local command's Defender calls on one thread (pytest-benchmark; not in the default test run):

    python -m pytest benchmarks/test_bench_cluster.py --benchmark-json benchmarks/results/cluster_cpu.json

Each round runs a whole command on IMAGES MNIST test images in one .npz, in batches of 8, as a process of its own:
`diffdefense defend FILE --json` (onnxruntime's default threads: every core), and `diffdefense defend FILE
--ray=ADDRESS --workers N --out DIR`, whose time includes joining the cluster and starting the workers' Defenders
(the cluster, `ray.init(num_cpus=CPUS)`, is started once by the benchmark). Each process starts a session of its own,
as Ray's workers do, so that where Linux groups the CPU's time by session (autogroup) every variant gets the same
share of it beside other work. extra_info holds images per second, the workers, the CPU model as lscpu names it,
and the load averages when the test began (other work on the same CPUs slows every variant).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[cluster]'")

from diffdefense.data import load_dataset  # noqa: E402
from diffdefense.machine import cpu_model  # noqa: E402
from tests.conftest import real_data_root  # noqa: E402, F401  (the benchmarks read the real data like the tests)

IMAGES = 256
CPUS = os.cpu_count()
WORKERS = (1, 2)


@pytest.fixture(scope="module")
def images_file(real_data_root, tmp_path_factory):  # noqa: F811
    test = load_dataset("mnist", "test", real_data_root)
    path = tmp_path_factory.mktemp("cluster") / "mnist_test.npz"
    np.savez(path, images=test.subset(np.arange(IMAGES)).float_images())
    return path


@pytest.fixture(scope="module")
def cluster_address():
    ray.init(num_cpus=CPUS, include_dashboard=False, logging_level="error")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def load_before() -> list[float]:
    """The load averages over 1 and 15 minutes as a test begins: how busy the CPUs already were."""
    return [round(x, 2) for x in os.getloadavg()[::2]]


def run_process(args: list[str], env: dict | None = None) -> str:
    """stdout of a command run to completion in a session of its own, with env added to the environment."""
    env = {**os.environ, **(env or {})}
    done = subprocess.run(args, capture_output=True, text=True, start_new_session=True, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def record(benchmark, backend: str, load_before: list[float], **info) -> None:
    benchmark.extra_info.update(
        backend=backend,
        images=IMAGES,
        images_per_second=IMAGES / benchmark.stats.stats.median,
        preset="default",
        batch_size=8,
        cpu_model=cpu_model(),
        cpus=CPUS,
        load_average_1_15min_before=load_before,
        **info,
    )


def test_local_command(benchmark, images_file, load_before):
    out = benchmark.pedantic(run_process, args=(["diffdefense", "defend", str(images_file), "--json"],), rounds=2)
    assert len(json.loads(out)["results"]) == IMAGES
    record(benchmark, "local command (onnxruntime, default threads)", load_before, workers=0, cpus_per_worker=None)


ONE_THREAD = """
import sys, numpy as np
from diffdefense.runtime.defender import Defender
from diffdefense.shipped import bundle_dir
images = np.load(sys.argv[1])["images"]
with Defender(bundle_dir("mnist"), threads=1) as defender:
    print(sum(len(defender(images[i : i + 8]).labels) for i in range(0, len(images), 8)))
"""


def test_local_calls_on_one_thread(benchmark, images_file, load_before):
    """As a Ray worker of 1 CPU runs them: onnxruntime on 1 thread, and the fused steps' OpenMP too (Ray sets a
    worker's OMP_NUM_THREADS to its CPUs)."""
    args = ([sys.executable, "-c", ONE_THREAD, str(images_file)], {"OMP_NUM_THREADS": "1"})
    out = benchmark.pedantic(run_process, args=args, rounds=2)
    assert int(out) == IMAGES
    backend = "local, the command's Defender calls on 1 thread (onnxruntime and OpenMP)"
    record(benchmark, backend, load_before, workers=0, cpus_per_worker=1)


@pytest.mark.parametrize("workers", WORKERS)
def test_ray_command(benchmark, images_file, cluster_address, tmp_path, workers, load_before):
    runs = iter(range(10))

    def run():
        out = tmp_path / f"run{next(runs)}"
        ray_args = [f"--ray={cluster_address}", "--workers", str(workers), "--out", str(out), "--json"]
        out = run_process(["diffdefense", "defend", str(images_file), *ray_args])
        return json.loads(out[out.index("{") :])

    summary = benchmark.pedantic(run, rounds=2)
    assert summary["images"] == IMAGES and summary["workers"] == workers
    record(benchmark, f"Ray, {workers} worker(s) of 1 CPU", load_before, workers=workers, cpus_per_worker=1)
