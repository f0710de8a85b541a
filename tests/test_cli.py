import json

from click.testing import CliRunner

from diffdefense.cli import main


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "train" in result.output and "models" in result.output


def test_models_stats_reports_parameters_and_flops_as_json():
    result = CliRunner().invoke(main, ["models", "stats", "--json"])
    assert result.exit_code == 0
    stats = json.loads(result.output)
    assert stats["parameters"] > 0 and stats["flops_per_image"] > stats["parameters"]


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


def test_bad_dataset_name_is_a_usage_error():
    result = CliRunner().invoke(main, ["train", "ddpm", "--dataset", "cifar", "--out", "x"])
    assert result.exit_code == 2 and "'cifar' is not one of" in result.output


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
