"""The PyTorch reference defence: its two gradient modes, its seeding, and its candidate choice."""

import numpy as np
import pytest
import torch

from diffdefense.draws import draw
from diffdefense.reference.defense import ReferenceDefense, to_image
from diffdefense.schedule import NoiseSchedule
from diffdefense.settings import PRESETS, DefenseSettings
from diffdefense.training.models import UNet

SCHEDULE = NoiseSchedule.linear()


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet().eval()


def small(**changes) -> DefenseSettings:
    return DefenseSettings(**{"num_candidates": 2, "iterations": 2, "num_steps": 3, "start_step": 20, **changes})


def test_straight_through_gradient_is_the_product_of_the_step_coefficients(unet):
    defense = ReferenceDefense(unet, SCHEDULE, small())
    noise = draw(defense.settings, 1).noise[0].reshape(3, 2, 1, 28, 28)
    z = torch.randn(2, 1, 28, 28, requires_grad=True)
    x0 = defense.run_chain(z, noise)
    upstream = torch.randn_like(x0)
    (grad,) = torch.autograd.grad((x0 * upstream).sum(), z)
    assert defense.straight_through_gain == pytest.approx(float(np.prod(defense.chain.a)))
    torch.testing.assert_close(grad, defense.straight_through_gain * upstream, rtol=1e-5, atol=1e-6)


def test_full_gradient_matches_finite_differences(unet):
    defense = ReferenceDefense(UNet((8, 8, 8)).double().eval(), SCHEDULE, small(gradient="full", eta=0.0))
    noise = np.zeros((3, 1, 1, 28, 28))
    target = torch.rand(1, 1, 28, 28, dtype=torch.float64)
    z = torch.randn(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)

    def loss(latent):
        return (to_image(defense.run_chain(latent, noise, track_unet=True), "sigmoid") - target).pow(2).mean()

    (grad,) = torch.autograd.grad(loss(z), z)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):  # central differences along random directions, in float64
        direction = torch.randn(z.shape, generator=generator, dtype=torch.float64)
        h = 1e-5
        numeric = (loss(z + h * direction) - loss(z - h * direction)) / (2 * h)
        assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-12)


def test_full_and_straight_through_gradients_differ(unet):
    z = torch.randn(2, 1, 28, 28)
    grads = []
    for mode in ("straight-through", "full"):
        defense = ReferenceDefense(unet, SCHEDULE, small(gradient=mode))
        noise = draw(defense.settings, 1).noise[0].reshape(3, 2, 1, 28, 28)
        latent = z.clone().requires_grad_(True)
        defense.run_chain(latent, noise, track_unet=mode == "full").pow(2).sum().backward()
        grads.append(latent.grad)
    assert not torch.allclose(*grads, rtol=1e-3)


@pytest.mark.parametrize(
    "preset",
    [small(), small(gradient="full"), small(fresh_noise=True, output_map="sigmoid"), small(refine=True)],
)
def test_same_seed_same_reconstruction(unet, preset):
    images = torch.rand(3, 1, 28, 28)
    one = ReferenceDefense(unet, SCHEDULE, preset).reconstruct(images)
    two = ReferenceDefense(unet, SCHEDULE, preset).reconstruct(images)
    other = ReferenceDefense(unet, SCHEDULE, preset.with_(seed=1)).reconstruct(images)
    assert torch.equal(one.images, two.images) and torch.equal(one.errors, two.errors)
    assert not torch.equal(one.images, other.images)


def test_reconstruction_shapes_ranges_and_best_candidate(unet):
    settings = small(num_candidates=3)
    result = ReferenceDefense(unet, SCHEDULE, settings).reconstruct(torch.rand(4, 1, 28, 28))
    assert result.images.shape == (4, 1, 28, 28) and result.latents.shape == (4, 1, 28, 28)
    assert result.candidate_errors.shape == (4, 3) and result.errors.shape == (4,)
    assert result.images.min() >= 0 and result.images.max() <= 1
    torch.testing.assert_close(result.errors, result.candidate_errors.min(dim=1).values)


def test_updates_lower_the_loss(unet):
    """More iterations of the optimiser must fit the target better, on average over candidates."""
    images = torch.rand(2, 1, 28, 28)
    settings = DefenseSettings(num_candidates=3, iterations=1, num_steps=3, start_step=20, lr=0.5)
    before = ReferenceDefense(unet, SCHEDULE, settings).reconstruct(images).candidate_errors.mean()
    after = ReferenceDefense(unet, SCHEDULE, settings.with_(iterations=6)).reconstruct(images).candidate_errors.mean()
    assert after < before


def test_the_default_preset_costs_less_than_the_paper():
    assert PRESETS["default"].unet_evaluations == 122 < PRESETS["paper"].unet_evaluations


def test_paper_preset_is_the_official_configuration():
    paper = PRESETS["paper"]
    assert (paper.iterations, paper.num_candidates, paper.num_steps, paper.gradient) == (4, 5, 15, "straight-through")
    assert paper.unet_evaluations == 300
    assert paper.learning_rates() == pytest.approx([0.02, 25 * 0.1**0.25, 25 * 0.1**0.5])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_candidates": 0}, "num_candidates"),
        ({"num_steps": 30, "start_step": 10}, "num_steps <= start_step"),
        ({"eta": 2.0}, "eta in"),
        ({"gradient": "exact"}, "gradient"),
        ({"lr": -1.0}, "learning rates"),
    ],
)
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        DefenseSettings(**changes)


def test_functional_adam_matches_torch_adam():
    from diffdefense.reference.defense import FunctionalAdam

    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(10, generator=generator)
    grads = [torch.randn(10, generator=generator) for _ in range(4)]
    rates = [0.02, 14.0, 7.9, 0.5]
    param = z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=1.0, betas=(0.5, 0.999))
    adam, z = FunctionalAdam((0.5, 0.999)), z0.clone()
    for grad, lr in zip(grads, rates, strict=True):
        optimizer.param_groups[0]["lr"] = lr
        param.grad = grad.clone()
        optimizer.step()
        z = adam.step(z, grad, lr)
    torch.testing.assert_close(z, param.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("mode", "refine"), [("straight-through", False), ("full", False), ("straight-through", True)])
def test_differentiable_reconstruction_has_the_true_input_gradient(mode, refine):
    """The unrolled optimisation, differentiated by autograd, against central differences in float64."""
    torch.manual_seed(0)
    unet = UNet((8, 8, 8)).double().eval()
    settings = DefenseSettings(
        num_candidates=2,
        iterations=3,
        num_steps=2,
        start_step=10,
        lr=0.05,
        gradient=mode,
        output_map="sigmoid",
        refine=refine,
    )
    defense = ReferenceDefense(unet, SCHEDULE, settings)
    draws = draw(settings, 1)
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 1, 28, 28, dtype=torch.float64)

    def objective(images):
        return (defense.reconstruct(images, draws, differentiable=True).images * weights).sum()

    (grad,) = torch.autograd.grad(objective(x), x)
    direction = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-4)


def test_plain_reconstruction_keeps_no_graph(unet):
    result = ReferenceDefense(unet, SCHEDULE, small()).reconstruct(torch.rand(1, 1, 28, 28, requires_grad=True))
    assert not result.images.requires_grad and not result.errors.requires_grad


def test_functional_adam_differentiates_through_an_exactly_zero_gradient():
    """A gradient that depends on the input but is exactly 0 (sqrt's slope is infinite there) must not give NaN."""
    from diffdefense.reference.defense import FunctionalAdam

    x = torch.ones(4, requires_grad=True)
    adam = FunctionalAdam((0.5, 0.999))
    z = adam.step(torch.zeros(4), x * torch.tensor([0.0, 1.0, 2.0, 0.0]), lr=0.1)
    z = adam.step(z, x * torch.tensor([0.0, 1.0, 1.0, 0.0]), lr=0.1)
    (grad,) = torch.autograd.grad(z.sum(), x)
    assert torch.isfinite(grad).all()


def test_settings_survive_a_json_round_trip_and_unknown_keys_are_refused():
    import json

    paper = PRESETS["paper"]
    assert DefenseSettings.from_dict(json.loads(json.dumps(paper.to_dict()))) == paper
    with pytest.raises(ValueError, match="unknown keys \\['steps'\\]"):
        DefenseSettings.from_dict({"steps": 3})


@pytest.mark.parametrize("init", ["noise", "input", "blank"])
def test_latent_inits_start_where_their_settings_say(unet, init):
    """With L = 1 nothing updates the latents, so the chosen candidate's latent is its starting point."""
    settings = small(iterations=1, latent_init=init)
    images = torch.rand(2, 1, 28, 28)
    result = ReferenceDefense(unet, SCHEDULE, settings).reconstruct(images)
    noise = torch.from_numpy(draw(settings, 2).latents)  # (B, R, 1, 28, 28)
    c0, c1 = (float(c) for c in SCHEDULE.q_sample_coefficients(np.array(settings.start_step)))
    start = {"noise": noise, "input": c0 * (2 * images[:, None] - 1) + c1 * noise, "blank": c1 * noise - c0}[init]
    best = result.candidate_errors.argmin(1)
    torch.testing.assert_close(result.latents, start[torch.arange(2), best], rtol=1e-6, atol=1e-6)


def test_refine_denoises_the_chosen_image_and_keeps_its_fit_as_the_score(unet):
    """refine: the chosen candidate's image, diffused to the chain's start level with the first refine draw, then
    the chain with the others, mapped by 'clip'; the latents and the detection score are those without it."""
    settings = small(num_candidates=3, output_map="sigmoid", latent_init="blank")
    images = torch.rand(2, 1, 28, 28)
    plain = ReferenceDefense(unet, SCHEDULE, settings).reconstruct(images)
    refined_defense = ReferenceDefense(unet, SCHEDULE, settings.with_(refine=True))
    refined = refined_defense.reconstruct(images)
    torch.testing.assert_close(refined.errors, plain.errors, rtol=0, atol=0)
    torch.testing.assert_close(refined.latents, plain.latents, rtol=0, atol=0)
    refine_noise = draw(settings.with_(refine=True), 2).refine_noise
    assert refine_noise.shape == (1 + settings.num_steps, 2, 1, 28, 28)
    c0, c1 = (float(c) for c in SCHEDULE.q_sample_coefficients(np.array(settings.start_step)))
    start = c0 * (2 * plain.images - 1) + c1 * torch.from_numpy(refine_noise[0])
    expected = to_image(refined_defense.run_chain(start, refine_noise[1:]), "clip")
    torch.testing.assert_close(refined.images, expected, rtol=0, atol=1e-6)
    assert not torch.equal(refined.images, plain.images)
    assert settings.with_(refine=True).unet_evaluations == settings.unet_evaluations + settings.num_steps


def test_the_refining_pass_runs_from_its_own_start_level(unet):
    """refine_start_step: the chosen image diffused to that level, then the T* steps respaced from it; the chain,
    the fit and the draws are those of the pass at the chain's level."""
    settings = small(num_candidates=3, output_map="sigmoid", latent_init="blank", refine=True)
    deeper = settings.with_(refine_start_step=30)
    images = torch.rand(2, 1, 28, 28)
    at_chain_level = ReferenceDefense(unet, SCHEDULE, settings).reconstruct(images)
    deeper_defense = ReferenceDefense(unet, SCHEDULE, deeper)
    refined = deeper_defense.reconstruct(images)
    torch.testing.assert_close(refined.errors, at_chain_level.errors, rtol=0, atol=0)
    assert list(deeper_defense.refine_chain.timesteps) == [30, 15, 0]
    assert list(deeper_defense.chain.timesteps) == [20, 10, 0]
    refine_noise = draw(deeper, 2).refine_noise
    np.testing.assert_array_equal(refine_noise, draw(settings, 2).refine_noise)
    chosen = ReferenceDefense(unet, SCHEDULE, settings.with_(refine=False)).reconstruct(images).images
    c0, c1 = (float(c) for c in SCHEDULE.q_sample_coefficients(np.array(30)))
    start = c0 * (2 * chosen - 1) + c1 * torch.from_numpy(refine_noise[0])
    expected = to_image(deeper_defense.run_chain(start, refine_noise[1:], chain=deeper_defense.refine_chain), "clip")
    torch.testing.assert_close(refined.images, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(refined.images, at_chain_level.images, atol=1e-3)


def test_refine_leaves_the_other_draws_as_they_were():
    settings = small(num_candidates=3, fresh_noise=True)
    plain, refined = draw(settings, 2), draw(settings.with_(refine=True), 2)
    assert plain.refine_noise is None
    np.testing.assert_array_equal(plain.latents, refined.latents)
    np.testing.assert_array_equal(plain.noise, refined.noise)
