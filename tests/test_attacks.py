"""Every attack of the suite runs (torchattacks; DeepFool through ART), stays in [0, 1] and within its budget."""

import pytest
import torch

pytest.importorskip("torchattacks", reason="install it with tools/install.sh")

from diffdefense.reference.attacks import ATTACKS, EPS, run_attack  # noqa: E402
from diffdefense.training.models import ModelA  # noqa: E402


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = ModelA().eval()
    images = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        labels = model(images).argmax(1)  # classified "right", so that every attack has work to do
    return model, images, labels


@pytest.mark.parametrize("name", sorted(set(ATTACKS) - {"AutoAttack"}))
def test_attack_output_is_valid(model_and_data, name):
    model, images, labels = model_and_data
    adversarial = run_attack(name, model, images, labels, seed=0)
    assert adversarial.shape == images.shape and torch.isfinite(adversarial).all()
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    if ATTACKS[name].threat.startswith("Linf"):
        assert (adversarial - images).abs().max() <= EPS + 1e-5


@pytest.mark.parametrize("name", ["PGD", "DeepFool"])
def test_attack_fools_an_undefended_model(model_and_data, name):
    model, images, labels = model_and_data
    adversarial = run_attack(name, model, images, labels)
    with torch.no_grad():
        fooled = (model(adversarial).argmax(1) != labels).float().mean()
    assert fooled >= 0.8


def test_seeded_attacks_repeat(model_and_data):
    model, images, labels = model_and_data
    assert torch.equal(
        run_attack("Square", model, images, labels, seed=3), run_attack("Square", model, images, labels, seed=3)
    )


def test_unknown_attack_is_refused(model_and_data):
    with pytest.raises(ValueError, match="Expected an attack in"):
        run_attack("Magic", *model_and_data)
