import json
import re

import pytest
from click.testing import CliRunner

from diffdefense.cli import main


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "train" in result.output and "models" in result.output


@pytest.mark.parametrize(
    "command", [["train", "ddpm"], ["train", "classifier"], ["models", "sample"], ["evaluate"], ["export"], ["defend"]]
)
def test_every_command_help_exits_cleanly(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and result.output.startswith("Usage:"), result.output


def test_models_stats_reports_parameters_and_flops_as_json():
    result = CliRunner().invoke(main, ["models", "stats", "--json"])
    assert result.exit_code == 0
    stats = json.loads(result.output)
    assert stats["parameters"] > 0 and stats["flops_per_image"] > stats["parameters"]


def test_models_noise_error_is_seeded_and_ranks_the_fine_tuned_net_above_its_start():
    args = ["models", "noise-error", "--unet", "unet_bn_small", "--unet", "unet_bn_small_t15", "-n", "64"]
    runs = [CliRunner().invoke(main, [*args, "--max-timestep", "15", "--json"]) for _ in range(2)]
    assert runs[0].exit_code == 0, runs[0].output
    assert runs[0].output == runs[1].output
    before, after = (r["noise_mse"] for r in json.loads(runs[0].output))
    assert 0.0 < after < before  # fine-tuned on t < 15, measured on held-out images at t < 15


def test_models_noise_error_refuses_more_images_than_the_test_split():
    result = CliRunner().invoke(main, ["models", "noise-error", "-n", "10001"])
    assert result.exit_code == 1 and "Expected 1 <= n <= 10000" in result.output


def test_models_verify_passes_on_the_shipped_weights():
    result = CliRunner().invoke(main, ["models", "verify"])
    assert result.exit_code == 0, result.output
    assert "ok  mnist/unet.safetensors" in result.output


def test_models_verify_fails_with_exit_1_on_a_changed_file(tmp_path, monkeypatch):
    import shutil

    from diffdefense import shipped

    copy = shutil.copytree(shipped.WEIGHTS_DIR, tmp_path / "weights")
    (copy / "mnist" / "model_b.json").write_text("{}")
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", copy)
    result = CliRunner().invoke(main, ["models", "verify"])
    assert result.exit_code == 1 and "mnist/model_b.json has sha256" in result.output


def test_a_dataset_name_that_is_not_a_safe_folder_name_is_a_usage_error():
    result = CliRunner().invoke(main, ["train", "ddpm", "--dataset", "../cifar", "--out", "x"])
    assert result.exit_code == 2 and "Expected a data set name of 1 to 64 letters" in result.output


def test_a_dataset_of_your_own_without_a_bundle_says_how_to_make_one():
    result = CliRunner().invoke(main, ["defend", "diffdefense/samples/mnist.npz", "--dataset", "cifar"])
    assert result.exit_code == 1 and "`diffdefense export --dataset cifar --out DIR` and pass --bundle DIR" in (
        result.output
    )


def test_missing_data_folder_gives_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["models", "accuracy", "--data-root", str(tmp_path / "none")])
    assert result.exit_code == 1 and "Error: Expected a folder of MNIST-format IDX files" in result.output


def test_the_command_line_loads_without_torch():
    """The lean install has no torch: the CLI must import it only inside the commands that train."""
    import subprocess
    import sys

    code = "import sys, diffdefense.cli, diffdefense.data, diffdefense.shipped; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_defend_prints_labels_flags_and_latency(exported_bundle, tmp_path):
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", images=images, labels=np.array([1, 2, 3]), attacked=np.array([False, True, True]))
    args = ["defend", str(tmp_path / "in.npz"), "--bundle", str(exported_bundle.path), "--batch-size", "2"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["index"] for r in report["results"]] == [0, 1, 2]
    assert report["results"][1]["attacked"] is True and report["results"][2]["true_label"] == "3"
    assert report["latency"]["images"] == 3 and report["latency"]["per_image_ms_median"] > 0
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0 and "ms per image" in text.output


def test_defend_refuses_a_pickled_or_misshapen_file(exported_bundle, tmp_path):
    import numpy as np

    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "flat.npy", np.zeros((2, 784), np.float32))
    for name, message in (("objects.npy", "without pickle"), ("flat.npy", r"\(N, 28, 28\)")):
        result = CliRunner().invoke(main, ["defend", str(tmp_path / name), "--bundle", str(exported_bundle.path)])
        assert result.exit_code == 1

        assert re.search(message, result.output), result.output
