"""Training commands on a tiny made-up data set: they learn, ship with a record, and resume exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file

import diffdefense.training.train_classifier as classifier_module
import diffdefense.training.train_ddpm as ddpm_module
from diffdefense import shipped
from diffdefense.training.loading import load_unet
from diffdefense.training.train_classifier import ClassifierConfig, train_classifier
from diffdefense.training.train_ddpm import DDPMConfig, train_ddpm


def interrupted_then_resumed(module, train, config, out_dir, data_root, monkeypatch) -> dict:
    """Kill the run right after its first checkpoint, start it again, return the final checkpoint."""
    real_save = module.save_checkpoint
    saved_epochs = []

    def save_then_crash(folder, state):
        real_save(folder, state)
        saved_epochs.append(state["epoch"])
        if len(saved_epochs) == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(module, "save_checkpoint", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            train(config, out_dir, data_root, do_ship=False)
        train(config, out_dir, data_root, do_ship=False)
    assert saved_epochs == list(range(1, config.epochs + 1))
    return torch.load(out_dir / "checkpoint.pt", weights_only=True)


def assert_same_weights(one: dict, two: dict) -> None:
    assert one.keys() == two.keys()
    for key, value in one.items():
        torch.testing.assert_close(value, two[key], rtol=0, atol=0)


def test_classifier_resumed_after_a_crash_matches_an_uninterrupted_run(tiny_data_root, tmp_path, monkeypatch):
    config = ClassifierConfig(epochs=2, batch_size=16, augment=True, seed=3)
    train_classifier(config, tmp_path / "whole", tiny_data_root, do_ship=False)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    resumed = interrupted_then_resumed(
        classifier_module, train_classifier, config, tmp_path / "resumed", tiny_data_root, monkeypatch
    )
    assert_same_weights(whole["model"], resumed["model"])


def test_ddpm_resumed_after_a_crash_matches_an_uninterrupted_run(tiny_data_root, tmp_path, monkeypatch):
    config = DDPMConfig(epochs=2, batch_size=32, warmup_steps=2, seed=1)
    train_ddpm(config, tmp_path / "whole", tiny_data_root, do_ship=False)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    resumed = interrupted_then_resumed(
        ddpm_module, train_ddpm, config, tmp_path / "resumed", tiny_data_root, monkeypatch
    )
    assert_same_weights(whole["ema"], resumed["ema"])


def test_resuming_with_other_settings_is_refused(tiny_data_root, tmp_path):
    train_classifier(ClassifierConfig(epochs=1, batch_size=16), tmp_path / "run", tiny_data_root, do_ship=False)
    with pytest.raises(ValueError, match="epochs: checkpoint 1, now 2"):
        train_classifier(ClassifierConfig(epochs=2, batch_size=16), tmp_path / "run", tiny_data_root, do_ship=False)


def test_shipping_writes_weights_record_and_checksums(tiny_data_root, tmp_path, monkeypatch):
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", weights_dir)
    record = train_classifier(ClassifierConfig(epochs=3, batch_size=16, seed=0), tmp_path / "run", tiny_data_root)
    assert record["final_metrics"]["test_accuracy"] > 0.5  # the bar's row gives the label away
    state = load_file(str(shipped.verify_file("mnist/model_a.safetensors")))
    assert "head.4.weight" in state
    saved = json.loads((weights_dir / "mnist" / "model_a.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["epochs"] == 3 and saved["wall_seconds"] > 0
    assert set(shipped.verify_all()) == {"mnist/model_a.safetensors", "mnist/model_a.json"}


def test_ddpm_can_start_from_a_finished_run_and_records_both(tiny_data_root, tmp_path):
    first = DDPMConfig(epochs=1, batch_size=32, warmup_steps=2, seed=1)
    train_ddpm(first, tmp_path / "first", tiny_data_root, do_ship=False)
    then = DDPMConfig(epochs=1, batch_size=32, warmup_steps=2, seed=2, lr=5e-4, init_from=str(tmp_path / "first"))
    record = train_ddpm(then, tmp_path / "then", tiny_data_root, do_ship=False)
    assert record["initialised_from"]["steps"] == 2 and record["steps_in_all"] == 4
    with pytest.raises(ValueError, match="Expected a finished run"):
        train_ddpm(DDPMConfig(epochs=1, init_from=str(tmp_path)), tmp_path / "x", tiny_data_root, do_ship=False)


def test_distillation_loss_is_zero_against_itself_and_positive_against_another_net():
    from diffdefense.schedule import NoiseSchedule
    from diffdefense.training.ddpm import distillation_loss
    from diffdefense.training.models.unet import UNet

    torch.manual_seed(0)
    schedule, x0 = NoiseSchedule.linear(), torch.rand(4, 1, 28, 28) * 2 - 1
    student, other = UNet((8, 8, 8), norm="batch").eval(), UNet((8, 8, 8), norm="batch").eval()
    generator = torch.Generator().manual_seed(0)
    assert distillation_loss(student, student, schedule, x0, generator, max_timestep=15).item() == 0.0
    assert distillation_loss(student, other, schedule, x0, generator, max_timestep=15).item() > 1e-4


NARROW = {"channels": (8, 8, 8), "norm": "batch", "batch_size": 32, "warmup_steps": 2}


@pytest.fixture
def shipped_narrow_net(tiny_data_root, tmp_path, monkeypatch):
    """A narrow BatchNorm SiLU net trained for one epoch and shipped as 'unet_bn_small' into a weights folder of
    its own; the run folder."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", weights_dir)
    train_ddpm(DDPMConfig(epochs=1, seed=1, **NARROW), tmp_path / "teacher", tiny_data_root, ship_as="unet_bn_small")
    return tmp_path / "teacher"


def test_ddpm_distils_from_a_shipped_net_starting_from_shipped_weights(tiny_data_root, tmp_path, shipped_narrow_net):
    student = DDPMConfig(
        epochs=1, seed=2, max_timestep=15, init_from_shipped="unet_bn_small", distill_from="unet_bn_small", **NARROW
    )
    record = train_ddpm(student, tmp_path / "student", tiny_data_root, ship_as="unet_bn_small_distilled")
    assert record["distilled_from"] == "unet_bn_small"
    assert record["initialised_from"]["shipped"] == "unet_bn_small" and record["steps_in_all"] == 2 * record["steps"]
    # the student starts as the teacher: what is left is only BatchNorm's batch statistics against its running ones
    assert record["history"][0]["mean_loss"] < 0.1
    shipped.verify_file("mnist/unet_bn_small_distilled.safetensors")

    wider = DDPMConfig(epochs=1, channels=(8, 16, 16), norm="batch", init_from_shipped="unet_bn_small")
    with pytest.raises(ValueError, match=r"channels \(8, 16, 16\) and norm 'batch', but it has \(8, 8, 8\)"):
        train_ddpm(wider, tmp_path / "wider", tiny_data_root, do_ship=False)
    both = DDPMConfig(epochs=1, init_from=str(shipped_narrow_net), init_from_shipped="unet_bn_small")
    with pytest.raises(ValueError, match="not both"):
        train_ddpm(both, tmp_path / "both", tiny_data_root, do_ship=False)


def test_a_silu_net_fine_tuned_into_a_relu_net_ships_and_loads_as_one(tiny_data_root, tmp_path, shipped_narrow_net):
    relu = DDPMConfig(epochs=1, seed=2, activation="relu", init_from_shipped="unet_bn_small", **NARROW)
    record = train_ddpm(relu, tmp_path / "relu", tiny_data_root, ship_as="unet_bn_relu")
    assert record["config"]["activation"] == "relu"
    net, _ = load_unet("mnist", name="unet_bn_relu")
    assert net.activation == "relu" and load_unet("mnist", name="unet_bn_small")[0].activation == "silu"
