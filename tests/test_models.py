import torch

from diffdefense.schedule import NoiseSchedule
from diffdefense.training.ddpm import diffusion_loss, sample
from diffdefense.training.models import ModelA, ModelB, UNet
from diffdefense.training.quality import unet_size


def test_classifiers_map_images_to_ten_logits():
    x = torch.rand(3, 1, 28, 28)
    for model in (ModelA(), ModelB()):
        assert model.eval()(x).shape == (3, 10)


def test_unet_is_sized_for_cpus():
    size = unet_size()
    assert 100_000 < size["parameters"] < 600_000
    assert 10e6 < size["flops_per_image"] < 100e6  # tens of MFLOP, not hundreds


def test_unet_predicts_noise_of_the_input_shape_for_any_time():
    model = UNet().eval()
    x = torch.randn(4, 1, 28, 28)
    out = model(x, torch.tensor([0, 1, 50, 99]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(model(x, torch.zeros(4, dtype=torch.long)), model(x, torch.full((4,), 99)))


def test_diffusion_loss_is_seeded_and_trainable():
    torch.manual_seed(0)
    model = UNet()
    x0 = torch.rand(8, 1, 28, 28) * 2 - 1
    schedule = NoiseSchedule.linear()
    first = diffusion_loss(model, schedule, x0, torch.Generator().manual_seed(1))
    again = diffusion_loss(model, schedule, x0, torch.Generator().manual_seed(1))
    assert first.item() == again.item()
    first.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sampling_is_seeded_and_in_image_range():
    model = UNet().eval()
    schedule = NoiseSchedule.linear(num_steps=5)
    one = sample(model, schedule, 3, torch.Generator().manual_seed(7))
    two = sample(model, schedule, 3, torch.Generator().manual_seed(7))
    assert one.shape == (3, 1, 28, 28) and torch.equal(one, two)
    assert one.min() >= 0 and one.max() <= 1


def test_clipped_sampler_equals_the_plain_step_when_nothing_clips():
    """With x_0 inside [-1, 1] the posterior-mean step is the affine step a x + b eps."""

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    schedule = NoiseSchedule.linear(num_steps=4, beta_start=1e-4, beta_end=2e-4)  # tiny noise: x_0 stays in range
    plain = sample(Zero(), schedule, 2, torch.Generator().manual_seed(0), clip_denoised=False)
    clipped = sample(Zero(), schedule, 2, torch.Generator().manual_seed(0), clip_denoised=True)
    inside = (plain > 0.05) & (plain < 0.95)  # away from the bounds at every step
    torch.testing.assert_close(clipped[inside], plain[inside], rtol=1e-4, atol=1e-5)
