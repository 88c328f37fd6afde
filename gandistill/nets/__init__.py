"""Networks: classifiers by name, the conditional generator and discriminators."""

from gandistill.nets.classifiers import CLASSIFIERS, ImageClassifier, build_classifier, count_parameters
from gandistill.nets.gan import ConditionalDiscriminator, ConditionalGenerator

__all__ = ["CLASSIFIERS", "ImageClassifier", "build_classifier", "count_parameters",
           "ConditionalDiscriminator", "ConditionalGenerator"]
