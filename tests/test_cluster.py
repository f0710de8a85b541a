"""Scale-out on a local Ray cluster of 2 CPUs: bulk defence and the evaluation give the single-process results bit for
bit, also when a worker dies mid-run, and an interrupted evaluation reruns only its missing chunks."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[cluster]'")

from diffdefense.cluster.bulk import DefenderSpec, defend_on_ray  # noqa: E402
from diffdefense.cluster.shards import read_results  # noqa: E402
from diffdefense.runtime.defender import Defender  # noqa: E402
from diffdefense.runtime.inputs import ImageFile  # noqa: E402
from diffdefense.settings import DefenseSettings  # noqa: E402
from diffdefense.shipped import SAMPLES_DIR, bundle_dir  # noqa: E402

CHEAP = DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=14)
BATCH = 8


class ExitOnce:
    """Ends the worker process (as a crash or a lost node would) the first time it reaches the piece of work named
    when, and leaves a marker file saying so: a retry, in a new process, finds the marker and goes on."""

    def __init__(self, marker: Path, when) -> None:
        self.marker, self.when = marker, when

    def __call__(self, *piece) -> None:
        if piece == self.when and not self.marker.exists():
            self.marker.write_text(repr(piece))
            os._exit(1)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def files() -> list[ImageFile]:
    """300 images in two files (the second with true labels), from the shipped samples with seeded noise."""
    samples = np.load(SAMPLES_DIR / "mnist.npz")
    rng = np.random.default_rng(0)
    images = np.repeat(samples["images"], 19, axis=0)[:300]
    images = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1).astype(np.float32)
    return [ImageFile(images[:170]), ImageFile(images[170:], labels=np.arange(130) % 10)]


@pytest.fixture(scope="module")
def local(files):
    """What `diffdefense defend` computes locally: one Defender call per batch of each file."""
    with Defender(bundle_dir("mnist"), CHEAP) as defender:
        results = [defender(f.images[start : start + BATCH]) for f in files for start in range(0, len(f.images), BATCH)]
        spec = DefenderSpec.of(defender)
    return spec, {
        "label": np.concatenate([r.labels for r in results]),
        "probability": np.concatenate([r.probabilities.max(axis=1) for r in results]),
        "reconstruction_error": np.concatenate([r.reconstruction_error for r in results]),
        "attack_flag": np.concatenate([r.attack_flag for r in results]),
        "reconstruction": np.concatenate([r.reconstructions for r in results]),
    }


def check_equal_to_local(out: Path, local_results: dict, files: list[ImageFile]) -> None:
    results = read_results(out)
    for name, expected in local_results.items():
        assert np.array_equal(results[name], expected), name
    assert results["path"].tolist() == ["a.npz"] * 170 + ["b.npz"] * 130
    assert results["index"].tolist() == list(range(170)) + list(range(130))
    assert results["true_label"].tolist() == [-1] * 170 + (np.arange(130) % 10).tolist()


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
def test_bulk_defence_equals_the_local_run(cluster, files, local, tmp_path, file_format):
    spec, expected = local
    summary = defend_on_ray(
        spec, files, ["a.npz", "b.npz"], tmp_path, workers=2, file_format=file_format, reconstructions=True,
        shard_size=128,
    )  # fmt: skip
    assert summary["images"] == 300 and summary["workers"] == 2 and len(summary["shards"]) == 3
    assert summary["flagged"] == int(expected["attack_flag"].sum())
    check_equal_to_local(tmp_path, expected, files)


def test_bulk_defence_survives_a_worker_that_dies(cluster, files, local, tmp_path):
    spec, expected = local
    marker = tmp_path / "exited"
    defend_on_ray(
        spec, files, ["a.npz", "b.npz"], tmp_path / "out", workers=2, reconstructions=True,
        on_call=ExitOnce(marker, (1, 64)),
    )  # fmt: skip
    assert marker.exists()  # a worker did die, at file 1's images 64 to 71
    check_equal_to_local(tmp_path / "out", expected, files)


def test_bulk_defence_refuses_bad_requests(cluster, files, local, tmp_path):
    spec, _ = local
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "part-00000.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="new or empty folder"):
        defend_on_ray(spec, files, ["a", "b"], tmp_path / "used")
    with pytest.raises(ValueError, match="between 1 and 2 workers"):
        defend_on_ray(spec, files, ["a", "b"], tmp_path / "out", workers=3)
    with pytest.raises(ValueError, match="node with at least 4 CPUs"):
        defend_on_ray(spec, files, ["a", "b"], tmp_path / "out", cpus_per_worker=4)
    with pytest.raises(ValueError, match="shard format"):
        defend_on_ray(spec, files, ["a", "b"], tmp_path / "out2", file_format="csv")


def test_defend_command_on_ray(cluster, tmp_path):
    from click.testing import CliRunner

    from diffdefense.cli import main

    samples = np.load(SAMPLES_DIR / "mnist.npz")
    attacked = np.flatnonzero(samples["attacked"])[:2]
    pick = np.concatenate([np.flatnonzero(~samples["attacked"])[:2], attacked])
    np.savez(tmp_path / "four.npz", images=samples["images"][pick], labels=samples["labels"][pick])
    args = ["defend", str(tmp_path / "four.npz"), "--ray", "--out", str(tmp_path / "out"), "--json"]
    result = CliRunner().invoke(main, [*args, "--fail-on-attack"])
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["images"] == 4 and summary["format"] == "parquet"
    assert result.exit_code == (3 if summary["flagged"] else 0), result.output
    assert len(read_results(tmp_path / "out")["label"]) == 4
    result = CliRunner().invoke(main, ["defend", str(tmp_path / "four.npz"), "--workers", "2"])
    assert result.exit_code == 2 and "--workers goes with --ray" in result.output


@pytest.fixture
def evaluation_config():
    from diffdefense.evaluation_config import EvaluationConfig

    return EvaluationConfig(
        num_images=12,
        attacks=("FGSM",),
        batch_size=4,
        adaptive_images=4,
        adaptive_eps=(0.1,),
        adaptive_steps=1,
        adaptive_gradients=("bpda",),
        settings=CHEAP,
    )


def single_process_record(config, out: Path, data_root: Path) -> dict:
    """run_evaluation with torch on one thread, as each task of 1 CPU runs it."""
    import torch

    from diffdefense.reference.evaluation import run_evaluation

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return without_wall_time(run_evaluation(config, out, data_root)["record"])
    finally:
        torch.set_num_threads(threads)


def without_wall_time(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "wall_seconds_this_run"}


def test_evaluation_on_ray_equals_the_single_process_run_though_a_worker_dies(
    cluster, evaluation_config, tiny_data_root, tmp_path
):
    from diffdefense.cluster.evaluation import evaluate_on_ray

    expected = single_process_record(evaluation_config, tmp_path / "local", tiny_data_root)
    marker, done = tmp_path / "exited", []
    on_task = ExitOnce(marker, ("defended_white_box_FGSM[4:8]",))
    evaluation = evaluate_on_ray(
        evaluation_config, tmp_path / "ray", tiny_data_root, cpus_per_task=1, on_task=on_task,
        progress=lambda finished, total, name: done.append((finished, total, name)),
    )  # fmt: skip
    assert marker.exists()  # the task did die once; its retry finished it
    assert without_wall_time(evaluation["record"]) == expected
    # Each chunk counted once: 3 chunks of 4 images for each of 3 defended sets, 2 attacks, 1 adaptive attack and
    # its defence; no parts left over.
    assert [name for *_, name in done].count("defended_white_box_FGSM[4:8]") == 1
    assert len(done) == done[-1][0] == done[-1][1] == 3 * 3 + 2 + 1 + 1
    assert not list((tmp_path / "ray" / "cache").rglob("parts/*.npz"))

    # An interrupted run: one set's chunk [0:4] saved, the rest lost. The rerun computes only [4:8] and [8:12].
    defence_cache = next((tmp_path / "ray" / "cache").glob("defense-*"))
    rows = np.load(defence_cache / "defended_white_box_FGSM.npz")["array"]
    (defence_cache / "defended_white_box_FGSM.npz").unlink()
    (defence_cache / "parts").mkdir(exist_ok=True)
    np.savez_compressed(defence_cache / "parts" / "defended_white_box_FGSM.0-4.npz", array=rows[:4])
    again = []
    evaluation = evaluate_on_ray(
        evaluation_config, tmp_path / "ray", tiny_data_root, cpus_per_task=1,
        progress=lambda finished, total, name: again.append(name),
    )  # fmt: skip
    assert sorted(again) == ["defended_white_box_FGSM[4:8]", "defended_white_box_FGSM[8:12]"]
    assert without_wall_time(evaluation["record"]) == expected


def test_evaluate_command_passes_ray_options(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import diffdefense.cluster.evaluation as cluster_evaluation
    from diffdefense.cli import main

    def stop_here(config, out, data_root, attack_cache, **options):
        raise RuntimeError(f"evaluate_on_ray {config.num_images} {options['cpus_per_task']}")

    monkeypatch.setattr(cluster_evaluation, "evaluate_on_ray", stop_here)
    args = ["evaluate", "-n", "3", "--attack", "FGSM", "--out", str(tmp_path), "--cpus-per-worker", "1"]
    result = CliRunner().invoke(main, [*args, "--ray"])
    assert "evaluate_on_ray 3 1" in str(result.exception)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--cpus-per-worker goes with --ray" in result.output


@pytest.mark.parametrize("attack", ["FGSM", "APGD-CE"])
def test_attacks_split_by_batch_equal_the_whole_run(attack):
    """The evaluation cuts the attacks of SEEDED_PER_BATCH at run_attack's batches: each batch's result must depend
    on that batch alone (here with batches of 2 for speed)."""
    import torch

    from diffdefense.cluster.evaluation import SEEDED_PER_BATCH
    from diffdefense.reference.attacks import run_attack
    from diffdefense.training.models import ModelA

    assert attack in SEEDED_PER_BATCH
    torch.manual_seed(0)
    model = ModelA().eval()
    images, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    whole = run_attack(attack, model, images, labels, seed=3, batch_size=2)
    parts = [run_attack(attack, model, images[s : s + 2], labels[s : s + 2], seed=3, batch_size=2) for s in (0, 2)]
    assert torch.equal(whole, torch.cat(parts))
