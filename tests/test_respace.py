"""Respaced reverse steps against closed forms: the DDPM posterior, DDIM's determinism, the identities."""

import numpy as np
import pytest

from diffdefense.respace import respaced_timesteps, reverse_chain, settings_timesteps, step_coefficients
from diffdefense.schedule import NoiseSchedule
from diffdefense.settings import DefenseSettings

SCHEDULE = NoiseSchedule.linear()


def test_unrespaced_ddpm_chain_is_the_trained_posterior_step():
    chain = reverse_chain(SCHEDULE, start_step=99, num_steps=100, eta=1.0)
    a, b, s = SCHEDULE.posterior_step_coefficients()
    np.testing.assert_array_equal(chain.timesteps, np.arange(99, -1, -1))
    np.testing.assert_allclose(chain.a, a[::-1], rtol=1e-12)
    np.testing.assert_allclose(chain.b, b[::-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chain.s, s[::-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("start", "steps"), [(99, 15), (60, 10), (30, 31), (5, 1)])
def test_respaced_steps_match_the_spaced_betas_of_improved_diffusion(start, steps):
    """improved-diffusion's SpacedDiffusion: new beta_i = 1 - abar[t_i] / abar[t_{i-1}]; the DDPM step
    of that schedule is the posterior step with those betas."""
    chain = reverse_chain(SCHEDULE, start, steps, eta=1.0)
    kept = np.sort(chain.timesteps)
    abar = SCHEDULE.alphas_cumprod[kept]
    spaced = NoiseSchedule(1 - abar / np.append(1.0, abar[:-1]))
    a, b, s = spaced.posterior_step_coefficients()
    np.testing.assert_allclose(chain.a, a[::-1], rtol=1e-10)
    np.testing.assert_allclose(chain.b, b[::-1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(chain.s, s[::-1], rtol=1e-9, atol=1e-12)
    assert chain.timesteps[0] == start and len(set(chain.timesteps)) == steps


def test_ddim_step_is_deterministic_and_maps_an_exact_noise_estimate_exactly():
    """With the true eps, x_t = sqrt(abar) x0 + sqrt(1 - abar) eps steps exactly to the same x0 at abar_prev."""
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=8), rng.normal(size=8)
    abar_t, abar_prev = 0.3, 0.8
    a, b, s = step_coefficients(abar_t, abar_prev, eta=0.0)
    x_t = np.sqrt(abar_t) * x0 + np.sqrt(1 - abar_t) * eps
    assert s == 0.0
    np.testing.assert_allclose(a * x_t + b * eps, np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps, rtol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_last_step_returns_the_predicted_x0_without_noise(eta):
    chain = reverse_chain(SCHEDULE, 40, 8, eta)
    abar0 = SCHEDULE.alphas_cumprod[0]
    assert chain.timesteps[-1] == 0 and chain.s[-1] == 0.0
    assert chain.a[-1] == pytest.approx(1 / np.sqrt(abar0))
    assert chain.b[-1] == pytest.approx(-np.sqrt((1 - abar0) / abar0))


def test_marginal_variance_is_kept_by_every_eta():
    """For x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, the step's noise terms add up to variance 1 - abar_prev."""
    for eta in (0.0, 0.3, 1.0):
        a, b, s = step_coefficients(0.2, 0.6, eta)
        eps_coefficient = a * np.sqrt(1 - 0.2) + b
        assert eps_coefficient**2 + s**2 == pytest.approx(1 - 0.6)


@pytest.mark.parametrize(("start", "steps"), [(10, 12), (10, 0), (100, 5), (-1, 1)])
def test_impossible_chains_are_refused(start, steps):
    with pytest.raises(ValueError, match="Expected"):
        reverse_chain(SCHEDULE, start, steps)


def test_eta_out_of_range_is_refused():
    with pytest.raises(ValueError, match="eta in \\[0, 1\\]"):
        step_coefficients(0.5, 0.9, 1.5)


def test_timesteps_are_evenly_spaced():
    np.testing.assert_array_equal(respaced_timesteps(14, 15), np.arange(15))
    np.testing.assert_array_equal(respaced_timesteps(99, 4), [0, 33, 66, 99])


def test_the_settings_call_the_unet_at_the_chain_and_the_refining_pass_timesteps():
    chain = DefenseSettings(num_steps=2, start_step=14)
    assert settings_timesteps(chain) == [14, 0]
    assert settings_timesteps(chain.with_(refine=True)) == [14, 0]
    assert settings_timesteps(chain.with_(refine=True, refine_start_step=24)) == [24, 14, 0]
    assert settings_timesteps(chain.with_(refine_start_step=24)) == [14, 0]  # no pass, no level of its own
