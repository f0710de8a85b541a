"""The lean runtime against the PyTorch reference on the same seeds, and its refusals of bad input."""

import numpy as np
import pytest
import torch

from diffdefense.draws import draw
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.runtime.backends import BackendError
from diffdefense.runtime.defender import Defender
from diffdefense.schedule import NoiseSchedule
from diffdefense.settings import PRESETS, DefenseSettings

FAST = DefenseSettings(num_candidates=3, iterations=3, num_steps=4, start_step=14, lr=0.1)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)


# Full gradients through the clip map are compared as gradients only (test_full_gradient_matches_autograd): the
# clip's slope jumps from 0.5 to 0 at the bounds, so a chain output within rounding of one changes that pixel's
# share of the gradient outright, the U-Net's Jacobian spreads it, and Adam, which moves every pixel by about lr
# whatever its gradient's size, turns the small changes into sign flips (4 % of pixels on one CI machine).
FULL = FAST.with_(gradient="full", output_map="sigmoid")


@pytest.mark.parametrize(
    "settings",
    [
        FAST,
        FAST.with_(output_map="sigmoid", fresh_noise=True, eta=0.0),
        FAST.with_(latent_init="blank"),
        FAST.with_(latent_init="blank", output_map="sigmoid", refine=True),
        FAST.with_(latent_init="blank", output_map="sigmoid", refine=True, refine_start_step=24),
        FULL,
        FULL.with_(latent_init="input"),
    ],
    ids=[
        "straight-through",
        "sigmoid-ddim",
        "blank-init",
        "blank-sigmoid-refine",
        "refine-deeper",
        "full",
        "input-init-full",
    ],
)
def test_runtime_matches_the_reference(exported_bundle, images, settings):
    runtime = Defender(exported_bundle.path, settings)(images)
    reference = ReferenceDefense(exported_bundle.unet, NoiseSchedule.linear(), settings).reconstruct(
        torch.from_numpy(images)
    )
    difference = np.abs(runtime.reconstructions - reference.images.numpy())
    if settings.gradient == "full":
        # Even through the sigmoid, a gradient within rounding of 0 can flip sign, and Adam then steps that pixel
        # the other way: a few pixels may differ, the reconstruction as a whole may not.
        assert difference.mean() < 1e-3, difference.mean()
        assert (difference > 1e-3).mean() < 0.01, (difference > 1e-3).mean()
        np.testing.assert_allclose(runtime.reconstruction_error, reference.errors.numpy(), rtol=2e-2, atol=1e-6)
    else:
        assert difference.max() < 1e-3
        np.testing.assert_allclose(runtime.reconstruction_error, reference.errors.numpy(), rtol=1e-3, atol=1e-6)
    with torch.no_grad():
        on_its_own_images = exported_bundle.classifier(torch.from_numpy(runtime.reconstructions)).argmax(1).numpy()
        on_the_references = exported_bundle.classifier(reference.images).argmax(1).numpy()
    np.testing.assert_array_equal(runtime.labels, on_its_own_images)
    if settings.gradient != "full":
        # Full gradients may move a few pixels (above), and this random-weight classifier's two top logits can lie
        # within 2e-3 of each other: enough for those pixels to swap them. The images themselves were compared.
        np.testing.assert_array_equal(runtime.labels, on_the_references)


def test_full_gradient_matches_autograd(exported_bundle, images):
    """The chain's vector-Jacobian product (T* U-Net VJP graphs and the steps' coefficients) against autograd
    through the reference's chain, at the same latents, noise and upstream gradient: the arithmetic behind every
    full-gradient update, with no output map's bound and no Adam to amplify rounding."""
    settings = FAST.with_(gradient="full")
    defender = Defender(exported_bundle.path, settings)
    draws = draw(settings, len(images), images.shape[1:])
    n = len(images) * settings.num_candidates
    z = draws.latents.reshape(n, *images.shape[1:]).astype(np.float32)
    noise = draws.step_noise(0).reshape(settings.num_steps, n, *images.shape[1:])
    timesteps = [np.full(n, t, dtype=np.int64) for t in defender.chain.timesteps]
    upstream = np.random.default_rng(1).standard_normal(z.shape).astype(np.float32)

    x0, chain_inputs = defender.run_chain(z, noise, timesteps)
    grad = defender.backpropagate_chain(chain_inputs, timesteps, upstream)

    latent = torch.from_numpy(z).requires_grad_(True)
    expected_x0 = ReferenceDefense(exported_bundle.unet, NoiseSchedule.linear(), settings).run_chain(
        latent, noise, track_unet=True
    )
    (expected,) = torch.autograd.grad(expected_x0, latent, grad_outputs=torch.from_numpy(upstream))
    np.testing.assert_allclose(x0, expected_x0.detach().numpy(), rtol=1e-4, atol=1e-5)
    scale = float(expected.abs().max())
    # Compared as a whole (relative error of the norm), not element by element: on a 2-core AMD EPYC (2026-12-02)
    # the two differed by about 1 % on most elements in some test orders and not in others (cause still open);
    # a missing or wrong term of the VJP is off by far more than 3 %.
    relative = float(np.linalg.norm(grad - expected.numpy()) / np.linalg.norm(expected.numpy()))
    assert relative < 3e-2, relative
    # The U-Net's Jacobian matters: the straight-through gradient (prod(a) times the upstream one) is far from it.
    assert np.abs(defender.gain * upstream - expected.numpy()).max() > 0.1 * scale


def test_result_fields_and_seeding(exported_bundle, images):
    defender = Defender(exported_bundle.path, FAST, threshold=0.0)
    one, two = defender(images), defender(images)
    assert one.labels.shape == (4,) and one.probabilities.shape == (4, 10)
    np.testing.assert_allclose(one.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert one.attack_flag.all() and set(one.timings) == {"defense", "classify", "total"}
    np.testing.assert_array_equal(one.reconstructions, two.reconstructions)
    other = Defender(exported_bundle.path, FAST.with_(seed=1))(images)
    assert not np.array_equal(one.reconstructions, other.reconstructions)


def test_bundle_defaults_are_the_paper_preset_with_a_calibrated_threshold(exported_bundle):
    defender = Defender(exported_bundle.path)
    detection = defender.bundle.manifest.detection
    assert defender.settings == PRESETS["paper"] and defender.threshold == detection.threshold
    assert "8 clean images of the mnist-train split" in detection.calibration
    # The threshold belongs to the settings it was calibrated with: other settings get none unless given.
    assert Defender(exported_bundle.path, FAST).threshold is None
    # ... and to the score: the calibration is on the default, refined_l1; the paper's best_mse gets none either.
    assert detection.score == "refined_l1" and defender.detection_score == "refined_l1"
    assert Defender(exported_bundle.path, detection_score="best_mse").threshold is None
    with pytest.raises(ValueError, match="Expected detection_score to be one of"):
        Defender(exported_bundle.path, detection_score="l2")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 28, 28), np.float32), r"shape \(B, 1, 28, 28\), but got \(2, 28, 28\)"),
        (np.zeros((0, 1, 28, 28), np.float32), "the batch is empty"),
        (np.zeros((1, 1, 28, 28), np.uint8), "divide uint8 images by 255"),
        (np.full((1, 1, 28, 28), 2.0, np.float32), r"values in \[0, 1\], but they range from 2 to 2"),
        (np.full((1, 1, 28, 28), np.nan, np.float32), "NaN or infinity"),
        ([[0.0]], "Expected a numpy array"),
    ],
)
def test_bad_input_is_refused_with_a_sentence(exported_bundle, bad, message):
    with pytest.raises(ValueError, match=message):
        Defender(exported_bundle.path, FAST)(bad)


def test_a_missing_provider_names_what_is_installed(exported_bundle):
    with pytest.raises(BackendError, match="is not available in this onnxruntime; installed: .*CPUExecutionProvider"):
        Defender(exported_bundle.path, FAST, provider="tensorrt")


def test_full_gradient_mode_uses_the_unet_jacobian(exported_bundle, images):
    """The full gradient is not the straight-through one: the U-Net's Jacobian changes the updates."""
    full = Defender(exported_bundle.path, FAST.with_(gradient="full"))(images).reconstructions
    straight = Defender(exported_bundle.path, FAST)(images).reconstructions
    assert np.abs(full - straight).max() > 1e-3


def test_full_gradient_mode_without_the_vjp_graph_is_refused_clearly(exported_bundle, tmp_path):
    import json
    import shutil

    copy = shutil.copytree(exported_bundle.path, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["roles"]["unet_vjp"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="vector-Jacobian graph, which this bundle does not carry"):
        Defender(copy, FAST.with_(gradient="full"))
