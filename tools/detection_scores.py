"""AUROC of detection scores on attacked training images: see diffdefense.reference.detection_scores."""

from diffdefense.reference.detection_scores import main

if __name__ == "__main__":
    main()
