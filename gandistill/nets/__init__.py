"""Networks: classifiers by name, the conditional generator and discriminators."""

from gandistill.nets.classifiers import CLASSIFIERS, ImageClassifier, build_classifier, count_parameters
from gandistill.nets.gan import ConditionalDiscriminator, ConditionalGenerator, build_gan

__all__ = ["CLASSIFIERS", "ImageClassifier", "build_classifier", "count_parameters",
           "ConditionalDiscriminator", "ConditionalGenerator", "build_gan"]
