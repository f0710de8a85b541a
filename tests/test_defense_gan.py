"""The Defense-GAN baseline: its generator, its reconstruction, its training command and its harness's plumbing."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import diffdefense.training.train_wgan as wgan_module
from diffdefense import shipped
from diffdefense.cli import main
from diffdefense.cli.baseline import GAN_PRESET_NAMES
from diffdefense.reference.baseline_evaluation import reconstruct_set
from diffdefense.reference.baseline_report import markdown_report
from diffdefense.reference.defense_gan import PRESETS, DefenseGAN, DefenseGANSettings
from diffdefense.reference.evaluation import ArrayCache
from diffdefense.training.configs import WGANConfig
from diffdefense.training.loading import load_generator
from diffdefense.training.models.gan import Critic, Generator
from diffdefense.training.train_wgan import train_wgan


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    model = Generator(width=8).eval()
    with torch.no_grad():  # a fresh generator's images are all near 0.5: widen their range, as training does
        model.to_28[3].weight.mul_(30.0)
    return model


@pytest.fixture(scope="module")
def targets(generator):
    """Images the generator can make, so that a reconstruction can reach them."""
    with torch.no_grad():
        return generator(torch.randn(4, generator.latent_dim, generator=torch.Generator().manual_seed(1)))


def test_generator_makes_28x28_images_in_the_unit_range_and_the_critic_scores_them(generator):
    images = generator(torch.randn(5, 128) * 3)
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= 0 and images.max() <= 1
    assert Critic(width=8)(images).shape == (5,)


def test_the_same_seed_gives_the_same_reconstruction_and_another_seed_another(generator, targets):
    settings = DefenseGANSettings(steps=5, restarts=3, seed=4)
    one, two = (
        DefenseGAN(generator, settings).reconstruct(targets),
        DefenseGAN(generator, settings).reconstruct(targets),
    )
    torch.testing.assert_close(one.images, two.images, rtol=0, atol=0)
    other = DefenseGAN(generator, DefenseGANSettings(steps=5, restarts=3, seed=5)).reconstruct(targets)
    assert not torch.equal(one.latents, other.latents)


def test_an_images_result_does_not_depend_on_its_batch(generator, targets):
    defense = DefenseGAN(generator, DefenseGANSettings(steps=5, restarts=3))
    whole = defense.reconstruct(targets)
    part = defense.reconstruct(targets[2:], keys=np.array([2, 3]))
    torch.testing.assert_close(part.images, whole.images[2:], rtol=1e-4, atol=1e-5)


def test_gradient_steps_lower_the_error(generator, targets):
    def error(steps: int) -> torch.Tensor:
        settings = DefenseGANSettings(steps=steps, restarts=2, lr=PRESETS["paper"].lr)
        return DefenseGAN(generator, settings).reconstruct(targets).restart_errors

    before, after = error(1), error(30)  # one step: the error of the initial latents, no update
    assert (after < before).all()
    assert after.mean() < 0.8 * before.mean()


def test_the_restart_with_the_lowest_error_is_returned(generator, targets):
    result = DefenseGAN(generator, DefenseGANSettings(steps=4, restarts=5)).reconstruct(targets)
    torch.testing.assert_close(result.errors, result.restart_errors.min(dim=1).values, rtol=0, atol=0)
    with torch.no_grad():  # the image is G of the returned latent, and the loss is its error
        remade = generator(result.latents)
    torch.testing.assert_close(result.images, remade, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.errors, (remade - targets).pow(2).flatten(1).mean(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 28, 28), r"shape \(B, 1, 28, 28\) with B >= 1, but got \(2, 28, 28\)"),
        (torch.full((1, 1, 28, 28), float("nan")), "NaN or infinite"),
        (torch.rand(1, 1, 28, 28) * 255, r"pixels in \[0, 1\]"),
        (np.zeros((1, 1, 28, 28), np.float32), "float tensor of images, but got ndarray"),
    ],
)
def test_bad_images_are_refused_saying_what_came(generator, images, message):
    with pytest.raises(ValueError, match=message):
        DefenseGAN(generator, DefenseGANSettings(steps=1, restarts=1)).reconstruct(images)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="steps to be a whole number >= 1, but got 0"):
        DefenseGANSettings(steps=0)
    with pytest.raises(ValueError, match=r"momentum in \[0, 1\)"):
        DefenseGANSettings(momentum=1.0)


def test_the_command_line_offers_every_preset():
    assert set(GAN_PRESET_NAMES) == set(PRESETS)


def test_train_wgan_runs_end_to_end_and_ships_a_loadable_generator(tiny_data_root, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    monkeypatch.setenv(shipped.WEIGHTS_ENV_VAR, str(weights))
    args = ["train", "wgan", "--data-root", str(tiny_data_root), "--epochs", "2", "--batch-size", "16"]
    result = CliRunner().invoke(main, [*args, "--width", "4", "--seed", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert set(shipped.verify_all(weights)) == {"mnist/generator.safetensors", "mnist/generator.json"}
    record = json.loads((weights / "mnist" / "generator.json").read_text())
    assert record["config"]["seed"] == 0 and record["epochs"] == 2 and record["wall_seconds"] > 0
    assert record["generator_steps"] == 2 * (64 // 16 // 5) and len(record["history"]) == 2
    loaded = load_generator("mnist", weights)
    torch.testing.assert_close(loaded.state_dict(), load_file(str(weights / "mnist" / "generator.safetensors")))
    assert (tmp_path / "run" / "samples_epoch_2.png").is_file()


def test_train_wgan_resumed_after_a_crash_matches_an_uninterrupted_run(tiny_data_root, tmp_path, monkeypatch):
    config = WGANConfig(epochs=2, batch_size=8, width=4, seed=2)
    train_wgan(config, tmp_path / "whole", tiny_data_root, do_ship=False)
    real_save, saved = wgan_module.save_checkpoint, []

    def save_then_crash(folder, state):
        real_save(folder, state)
        saved.append(state["epoch"])
        if len(saved) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(wgan_module, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_wgan(config, tmp_path / "resumed", tiny_data_root, do_ship=False)
    train_wgan(config, tmp_path / "resumed", tiny_data_root, do_ship=False)
    whole, resumed = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True) for r in ("whole", "resumed"))
    torch.testing.assert_close(whole["generator"], resumed["generator"], rtol=0, atol=0)


def test_reconstructions_are_cached_per_chunk_with_their_time(tmp_path):
    calls = []

    def defense(images, keys):
        calls.append(keys.tolist())
        return images * 0.5, keys.astype(np.float32)

    inputs = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    cache = ArrayCache(tmp_path / "cache", {"test": 1})
    recon, scores, seconds = reconstruct_set(defense, cache, "clean", inputs, chunk=2)
    assert calls == [[0, 1], [2, 3], [4]]
    np.testing.assert_array_equal(recon, inputs * 0.5)
    np.testing.assert_array_equal(scores, np.arange(5))
    assert (seconds >= 0).all() and seconds.shape == (5,)
    reconstruct_set(defense, cache, "clean", inputs, chunk=2)
    assert len(calls) == 3  # every chunk came from the cache


def test_the_report_puts_each_defence_beside_the_others():
    entry = {"accuracy": 0.9, "interval_95": [0.85, 0.94], "seconds_per_image": 0.5, "mean_score": 0.01}
    record = {
        "dataset": "mnist",
        "data": "mnist-test: the first 20 of 1000 images chosen with seed 0",
        "attacks": {"FGSM": {"eps": 0.3}},
        "defenses": {"defense-gan:cheap": {"settings": {}}, "diffdefense:default": {"settings": {}}},
        "chunk": 10,
        "torch_threads": 1,
        "results": {
            "clean": {
                "no_defense": {"accuracy": 1.0},
                "defenses": {"defense-gan:cheap": entry, "diffdefense:default": entry},
            },
            "FGSM": {
                "no_defense": {"accuracy": 0.2},
                "defenses": {
                    "defense-gan:cheap": entry | {"detection_auroc": 0.75},
                    "diffdefense:default": entry | {"detection_auroc": 0.99},
                },
            },
        },
    }
    report = markdown_report(record, "diffdefense evaluate-baseline --first 20")
    assert "| FGSM | 20.0 | **90.0** | 85.0-94.0 | 0.750 | 0.500 | **90.0** | 85.0-94.0 | 0.990 | 0.500 |" in report
    assert "    diffdefense evaluate-baseline --first 20" in report


@pytest.mark.parametrize("command", [["train", "wgan"], ["evaluate-baseline"]])
def test_the_new_commands_have_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and result.output.startswith("Usage:"), result.output


def test_a_bad_baseline_run_is_refused_before_it_starts(tmp_path):
    args = ["evaluate-baseline", "--first", "20", "--bpda-images", "30", "--attack-cache", str(tmp_path / "a")]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Expected bpda_images between 0 and first (20), but got 30." in result.output
