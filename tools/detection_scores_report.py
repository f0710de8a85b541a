"""AUROC of detection scores on an evaluation's test images, from its caches: see
diffdefense.reference.detection_scores_report."""

from diffdefense.reference.detection_scores_report import main

if __name__ == "__main__":
    main()
