import numpy as np
import pytest

from diffdefense.schedule import NoiseSchedule


def test_default_schedule_ends_in_noise():
    schedule = NoiseSchedule.linear()
    assert schedule.num_steps == 100 and schedule.betas.dtype == np.float64
    assert schedule.betas[0] == pytest.approx(1e-3) and schedule.betas[-1] == pytest.approx(0.2)
    assert np.sqrt(schedule.alphas_cumprod[-1]) == pytest.approx(0.0045, abs=5e-5)  # quoted in docs/training.md


def test_official_schedule_does_not_reach_noise():
    """Why the default differs from the official 1e-4 .. 0.02 at T = 100 (docs/training.md)."""
    official = NoiseSchedule.linear(100, 1e-4, 0.02)
    assert np.sqrt(official.alphas_cumprod[-1]) == pytest.approx(0.603, abs=1e-3)


def test_posterior_step_equals_posterior_mean_of_the_predicted_x0():
    """a x_t + b eps must be the mean of q(x_{t-1} | x_t, x0_hat), formula (7) of Ho et al., with
    x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (formula 15)."""
    schedule = NoiseSchedule.linear()
    a, b, s = schedule.posterior_step_coefficients()
    rng = np.random.default_rng(0)
    x_t, eps = rng.normal(size=5), rng.normal(size=5)
    abar = schedule.alphas_cumprod
    for t in (0, 1, 50, 99):
        abar_prev = abar[t - 1] if t > 0 else 1.0
        x0 = (x_t - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
        mean = (
            np.sqrt(abar_prev) * schedule.betas[t] * x0 + np.sqrt(1 - schedule.betas[t]) * (1 - abar_prev) * x_t
        ) / (1 - abar[t])
        np.testing.assert_allclose(a[t] * x_t + b[t] * eps, mean, rtol=1e-10, atol=1e-12)
    assert s[0] == 0.0 and np.all(s[1:] > 0)


@pytest.mark.parametrize("betas", [[], [0.0, 0.1], [0.5, 1.0], [[0.1]]])
def test_bad_betas_are_refused(betas):
    with pytest.raises(ValueError):
        NoiseSchedule(np.array(betas))
