from diffdefense.training.models.classifiers import CLASSIFIERS, ModelA, ModelB
from diffdefense.training.models.unet import FixedTimestepUNet, UNet, fold_batchnorm

__all__ = ["CLASSIFIERS", "ModelA", "ModelB", "FixedTimestepUNet", "UNet", "fold_batchnorm"]
