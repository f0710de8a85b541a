"""The defence as attacks see it: BPDA's identity gradient, the true gradient, EOT's randomness, ART's shape."""

import numpy as np
import pytest
import torch

from diffdefense.reference.defended import DefendedClassifier, DiffDefensePreprocessor
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.detection import evaluate_detection
from diffdefense.schedule import NoiseSchedule
from diffdefense.settings import DefenseSettings
from diffdefense.training.models import ModelA, UNet

SETTINGS = DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=10, lr=0.05)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    return ModelA().eval(), ReferenceDefense(UNet((8, 8, 8)), NoiseSchedule.linear(), SETTINGS)


def test_bpda_gradient_is_the_classifier_gradient_at_the_reconstruction(parts):
    classifier, defense = parts
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    DefendedClassifier(classifier, defense, "bpda")(x).sum().backward()
    purified = defense.reconstruct(x.detach()).images.requires_grad_(True)
    classifier(purified).sum().backward()
    torch.testing.assert_close(x.grad, purified.grad)


def test_true_gradient_differs_from_bpda(parts):
    classifier, defense = parts
    grads = []
    for mode in ("bpda", "true"):
        x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        DefendedClassifier(classifier, defense, mode)(x)[0, 3].backward()
        grads.append(x.grad)
    assert torch.isfinite(grads[1]).all() and not torch.allclose(*grads)


def test_randomized_calls_use_new_draws_and_fixed_calls_do_not(parts):
    classifier, defense = parts
    x = torch.rand(1, 1, 28, 28)
    fixed = DefendedClassifier(classifier, defense)
    random = DefendedClassifier(classifier, defense, randomize=True)
    with torch.no_grad():
        assert torch.equal(fixed(x), fixed(x))
        assert not torch.equal(random(x), random(x))


def test_an_adaptive_attack_leaves_the_classifier_in_eval_mode(parts):
    """torchattacks restores the training mode it found; a wrapper left in training mode would switch the classifier's
    dropout on for every prediction after the attack (a fresh evaluation's adaptive rows, not a resumed one's)."""
    from diffdefense.reference.adaptive import AdaptiveBudget, run_adaptive

    classifier, defense = parts
    budget = AdaptiveBudget("BPDA-PGD eps 0.1", "bpda", 0.1, 0.05, 1)
    run_adaptive(budget, classifier, defense, torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))
    assert not classifier.training and not any(module.training for module in classifier.modules())


@pytest.mark.parametrize("attack", ["APGD-CE", "APGD-DLR"])
@pytest.mark.parametrize("gradient", ["bpda", "bpda-eot"])
def test_apgd_through_the_defence_stays_in_the_ball_and_is_seeded(parts, attack, gradient):
    from diffdefense.reference.adaptive import adaptive_budgets, run_adaptive

    classifier, defense = parts
    (budget,) = adaptive_budgets(0.1, steps=2, eot_iter=2, attacks=(attack,), gradients=(gradient,))
    assert budget.attack == attack and budget.eot_iter == (1 if gradient == "bpda" else 2)
    x, y = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 2, 3])
    first, again = (run_adaptive(budget, classifier, defense, x, y, seed=5) for _ in range(2))
    assert (first - x).abs().max() <= 0.1 + 1e-6 and first.min() >= 0 and first.max() <= 1
    torch.testing.assert_close(first, again)


def test_budget_names_and_cache_tags_tell_every_budget_apart():
    from diffdefense.reference.adaptive import adaptive_budgets
    from diffdefense.reference.evaluation import adaptive_tag

    budgets = [
        budget
        for eps in (0.3, 0.1)
        for budget in adaptive_budgets(eps, 20, 4, ("PGD", "APGD-CE", "APGD-DLR"), ("bpda", "bpda-eot", "true"))
    ]
    assert len({b.name for b in budgets}) == len({adaptive_tag(b) for b in budgets}) == len(budgets) == 18
    # the rows and cache files PGD had before the other attacks keep their names
    pgd = {b.name: adaptive_tag(b) for b in budgets if b.attack == "PGD" and b.gradient != "bpda-eot"}
    assert pgd["BPDA-PGD eps 0.3"] == "adaptive_bpda_eps_0.3_steps_20_eot_1"
    assert pgd["EOT-PGD (true gradient) eps 0.1"] == "adaptive_true_eps_0.1_steps_20_eot_4"
    assert "BPDA+EOT-APGD-DLR eps 0.3, 20 steps" in {b.name for b in budgets}


def test_an_unknown_adaptive_attack_is_refused(parts):
    from diffdefense.reference.adaptive import AdaptiveBudget, run_adaptive

    budget = AdaptiveBudget("x", "bpda", 0.1, 0.05, 1, attack="CW")
    with pytest.raises(ValueError, match="attack in"):
        run_adaptive(budget, *parts, torch.rand(1, 1, 28, 28), torch.tensor([1]))


def test_art_preprocessor_shape(parts):
    _, defense = parts
    preprocessor = DiffDefensePreprocessor(defense)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    purified, labels = preprocessor(x, np.array([1, 2]))
    assert purified.shape == x.shape and labels.tolist() == [1, 2]
    assert preprocessor.estimate_gradient(x, np.ones_like(x)).shape == x.shape
    with pytest.raises(ValueError, match="gradient of the input's shape"):
        preprocessor.estimate_gradient(x, np.ones((3, 1, 28, 28)))


def test_bad_gradient_mode_is_refused(parts):
    with pytest.raises(ValueError, match="'bpda' or 'true'"):
        DefendedClassifier(*parts, gradient="magic")


def test_detection_on_separable_and_identical_scores():
    clean = np.linspace(0.0, 1.0, 101)
    separable = evaluate_detection(clean, clean + 2.0)
    assert separable.auroc == 1.0 and separable.detection_rate == 1.0
    assert separable.clean_fpr == pytest.approx(0.05, abs=0.011)
    same = evaluate_detection(clean, clean)
    assert same.auroc == pytest.approx(0.5)


@pytest.mark.parametrize(("clean", "adversarial"), [([], [1.0]), ([np.nan], [1.0])])
def test_detection_refuses_empty_or_nan_scores(clean, adversarial):
    with pytest.raises(ValueError, match="Expected"):
        evaluate_detection(np.array(clean), np.array(adversarial))


@pytest.mark.parametrize(("gradient", "attack"), [("bpda", "PGD"), ("true", "EOTPGD")])
def test_torchattacks_can_attack_through_the_defense(parts, gradient, attack):
    torchattacks = pytest.importorskip("torchattacks", reason="install it with tools/install.sh")
    classifier, defense = parts
    model = DefendedClassifier(classifier, defense, gradient, randomize=attack == "EOTPGD")
    x = torch.rand(2, 1, 28, 28)
    kwargs = {"eot_iter": 2} if attack == "EOTPGD" else {}
    adversarial = getattr(torchattacks, attack)(model, eps=0.3, alpha=0.1, steps=2, **kwargs)(x, torch.tensor([1, 2]))
    assert adversarial.shape == x.shape and (adversarial - x).abs().max() <= 0.3 + 1e-6
    assert not torch.equal(adversarial, x)


@pytest.mark.parametrize(("attack", "gradient"), [("PGD", "bpda"), ("PGD", "bpda-eot"), ("APGD-CE", "bpda-eot")])
def test_an_attack_stopped_after_a_batch_resumes_to_the_uninterrupted_images(parts, tmp_path, attack, gradient):
    """The random start (torch's generator) and the EOT draws' seeds (the wrapper's count of calls) carry from one
    batch to the next: a resumed run must restore both from the checkpoint of the last finished batch."""
    from diffdefense.reference.adaptive import adaptive_budgets, run_adaptive
    from diffdefense.reference.batch_checkpoints import BatchCheckpoints

    classifier, defense = parts
    (budget,) = adaptive_budgets(0.1, steps=2, eot_iter=2, attacks=(attack,), gradients=(gradient,))
    x, y = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2)), torch.tensor([4, 5, 6])
    uninterrupted = run_adaptive(budget, classifier, defense, x, y, seed=3, batch_size=1)

    checkpoints = BatchCheckpoints(tmp_path / "batches")
    first = run_adaptive(budget, classifier, defense, x, y, seed=3, batch_size=1, checkpoints=checkpoints)
    torch.testing.assert_close(first, uninterrupted, rtol=0, atol=0)
    (tmp_path / "batches" / "batch_00002.npz").unlink()  # stopped during the last batch
    (tmp_path / "batches" / "batch_00001.npz").unlink()  # ... or during the second
    torch.manual_seed(12345)  # whatever the state of the process that resumes
    resumed = run_adaptive(budget, classifier, defense, x, y, seed=3, batch_size=1, checkpoints=checkpoints)
    torch.testing.assert_close(resumed, uninterrupted, rtol=0, atol=0)


def test_a_saved_batch_is_read_back_not_attacked_again(parts, tmp_path):
    from diffdefense.reference.adaptive import adaptive_budgets, run_adaptive
    from diffdefense.reference.batch_checkpoints import BatchCheckpoints

    classifier, defense = parts
    (budget,) = adaptive_budgets(0.1, steps=1, gradients=("bpda",))
    checkpoints = BatchCheckpoints(tmp_path / "batches")
    marker = np.full((1, 1, 28, 28), 0.5, dtype=np.float32)
    checkpoints.save(0, adversarial=marker, torch_rng_state=torch.get_rng_state().numpy(), eot_draws=np.array(0))
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    out = run_adaptive(budget, classifier, defense, x, y, batch_size=1, checkpoints=checkpoints)
    assert torch.equal(out[0], torch.from_numpy(marker[0])) and not torch.equal(out[1], torch.full_like(out[1], 0.5))


def test_the_cache_drops_an_arrays_batches_once_the_array_is_stored(tmp_path):
    from diffdefense.reference.evaluation import ArrayCache

    cache = ArrayCache(tmp_path / "cache", {"what": "test"})
    cache.checkpoints("adversarial_x").save(0, adversarial=np.zeros(2, dtype=np.float32))
    assert cache.checkpoints("adversarial_x").load(0) is not None
    stored = cache.get("adversarial_x", lambda: np.ones(2, dtype=np.float32))
    assert stored.tolist() == [1.0, 1.0] and cache.checkpoints("adversarial_x").load(0) is None
