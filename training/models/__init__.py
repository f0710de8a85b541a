from diffdefense.training.models.classifiers import CLASSIFIERS, ModelA, ModelB
from diffdefense.training.models.unet import UNet

__all__ = ["CLASSIFIERS", "ModelA", "ModelB", "UNet"]
