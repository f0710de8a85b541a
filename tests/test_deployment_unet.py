"""The deployment-shaped U-Net: BatchNorm folded into its convolutions, timesteps folded into its biases, both exact
to float rounding; and the BatchNorm statistics measured for the averaged weights at the end of training."""

import pytest
import torch

from diffdefense.schedule import NoiseSchedule
from diffdefense.training.models import FixedTimestepUNet, UNet, fold_batchnorm
from diffdefense.training.train_ddpm import recalibrate_batchnorm


def trained_looking(norm: str, activation: str = "silu") -> UNet:
    """A U-Net whose BatchNorms have non-trivial statistics and affine parameters, as after training."""
    torch.manual_seed(0)
    model = UNet((8, 16, 16), norm=norm, activation=activation)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    return model.eval()


def test_an_unknown_normalisation_is_refused_by_name():
    with pytest.raises(ValueError, match="Expected norm 'group' or 'batch', but got 'layer'"):
        UNet(norm="layer")


def test_an_unknown_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="Expected activation 'silu' or 'relu', but got 'gelu'"):
        UNet(norm="batch", activation="gelu")


def test_the_activation_is_the_only_difference_between_a_silu_and_a_relu_net():
    silu, relu = trained_looking("batch"), trained_looking("batch", "relu")
    relu.load_state_dict(silu.state_dict())  # no weights of their own: a SiLU net's weights start a ReLU one
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 14])
    with torch.no_grad():
        assert (silu(x, t) - relu(x, t)).abs().max() > 1e-3


@pytest.mark.parametrize("activation", ["silu", "relu"])
def test_folding_batchnorm_leaves_no_norm_and_the_same_function(activation):
    model = trained_looking("batch", activation)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x, t = torch.randn(4, 1, 28, 28) * 3, torch.tensor([0, 7, 14, 99])
    with torch.no_grad():
        assert (folded(x, t) - model(x, t)).abs().max() < 1e-5
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is left as it was


@pytest.mark.parametrize(("norm", "activation"), [("group", "silu"), ("batch", "silu"), ("batch", "relu")])
@pytest.mark.parametrize("timestep", [0, 14])
def test_a_fixed_timestep_net_equals_the_net_at_that_timestep(norm, activation, timestep):
    model = trained_looking(norm, activation)
    fixed = FixedTimestepUNet(model, timestep)
    assert fixed.unet.time_mlp is None  # nothing about time is left to compute
    x = torch.randn(5, 1, 28, 28) * 20  # latents reach |x| of about 20 in the defence
    with torch.no_grad():
        expected = model(x, torch.full((5,), timestep))
        assert (fixed(x) - expected).abs().max() < 1e-4 * expected.abs().max()
        other = model(x, torch.full((5,), timestep + 1))
        assert (fixed(x) - other).abs().max() > 1e-3  # the timestep does matter


def test_recalibrated_statistics_are_the_training_distributions_and_seeded():
    schedule = NoiseSchedule.linear(num_steps=10)
    train_x = torch.rand(64, 1, 28, 28) * 2 - 1
    one, two = trained_looking("batch"), trained_looking("batch")
    recalibrate_batchnorm(one, schedule, train_x, seed=3, batches=4)
    recalibrate_batchnorm(two, schedule, train_x, seed=3, batches=4)
    norm = one.enc1.norm1
    assert not norm.training and norm.momentum == 0.1
    assert torch.equal(norm.running_mean, two.enc1.norm1.running_mean)
    # measured afresh: the variances are no longer the uniform(0.5, 2) draws set above
    assert not torch.equal(norm.running_var, trained_looking("batch").enc1.norm1.running_var)


def test_the_batchnorm_nets_prediction_is_bounded_on_latents_far_outside_training():
    """The defence moves latents to |x| of 20 and more; there the GroupNorm net's prediction stays bounded by its
    normalisation and the BatchNorm net's by EPS_BOUND (folded graphs included)."""
    from diffdefense.training.models.unet import EPS_BOUND

    model = trained_looking("batch")
    x = torch.randn(4, 1, 28, 28) * 1000
    with torch.no_grad():
        model.conv_out.weight *= 1e4  # the input is clamped too: an output layer this large passes the bound
        out = model(x, torch.tensor([0, 7, 14, 99]))
        assert out.abs().max() == EPS_BOUND  # reached, and not passed
        assert FixedTimestepUNet(model, 14)(x).abs().max() <= EPS_BOUND
    assert trained_looking("group").eps_bound is None  # the shipped GroupNorm net is unchanged


def test_the_batchnorm_nets_input_is_clamped_so_far_latents_see_the_bound_alone():
    """Beyond +-INPUT_BOUND the BatchNorm net sees the bound (folded graphs included); inside it, the input itself."""
    from diffdefense.training.models.unet import INPUT_BOUND

    model = trained_looking("batch")
    far = torch.randn(4, 1, 28, 28) * 30
    assert far.abs().max() > 2 * INPUT_BOUND
    t = torch.tensor([0, 7, 14, 99])
    with torch.no_grad():
        assert torch.equal(model(far, t), model(far.clamp(-INPUT_BOUND, INPUT_BOUND), t))
        bounded = far.clamp(-INPUT_BOUND, INPUT_BOUND)
        assert torch.equal(FixedTimestepUNet(model, 14)(far), FixedTimestepUNet(model, 14)(bounded))
        near = bounded * 0.5
        assert not torch.equal(model(near, t), model(near * 0.9, t))  # inside the bound the input still counts
    assert trained_looking("group").input_bound is None


def test_training_on_low_timesteps_draws_only_those_and_the_defence_refuses_to_start_above_them():
    from diffdefense.reference.defense import ReferenceDefense
    from diffdefense.settings import PRESETS
    from diffdefense.training.ddpm import random_noising

    schedule = NoiseSchedule.linear()
    _, t, _ = random_noising(schedule, torch.zeros(500, 1, 28, 28), torch.Generator().manual_seed(0), 15)
    assert t.max() == 14 and t.min() == 0
    model = trained_looking("batch")
    model.trained_timesteps = 15  # as load_unet sets it from the weights' metadata
    ReferenceDefense(model, schedule, PRESETS["default"])  # starts at 14
    with pytest.raises(
        ValueError, match="trained on timesteps below 15 only, but the settings start the chain at index 20"
    ):
        ReferenceDefense(model, schedule, PRESETS["default"].with_(start_step=20))
