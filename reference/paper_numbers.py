"""The paper's published MNIST numbers (DESIGN section 1: read off the official repository's result figure,
+-0.5 point), for the report's side-by-side columns. Robust accuracy in %, attacks against Model A."""

PAPER_ROBUST_ACCURACY = {"FGSM": 90.1, "PGD": 96.0, "DeepFool": 98.3, "Square": 97.4, "AutoAttack": 88.2, "EAD": 95.9}
PAPER_NO_DEFENSE_ACCURACY = {"FGSM": 23.8, "PGD": 5.9, "DeepFool": 1.0, "Square": 43.4, "AutoAttack": 1.3, "EAD": 0.9}
PAPER_DETECTION_AUROC = {
    "FGSM": "0.99-1.0",
    "PGD": "0.99-1.0",
    "AutoAttack": "0.99-1.0",
    "Square": "0.99-1.0",
    "DeepFool": "0.85",
    "EAD": "0.80",
}
PAPER_ATTACKS = tuple(PAPER_ROBUST_ACCURACY)
