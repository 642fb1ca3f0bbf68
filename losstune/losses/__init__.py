"""losstune's losses: pure `keras.ops` functions plus thin `keras.losses.Loss` subclasses.

Each loss class declares its family (tasks, paper, hyperparameters with their valid and suggested search
ranges) once, on the class; see `base.LosstuneLoss`. This package imports nothing of the tuning side:
`losstune.families` builds the registry from `family_classes()`.
"""

from losstune.losses import classification, metric_learning, regression  # noqa: F401  (every family module)
from losstune.losses.base import LosstuneLoss
from losstune.losses.hyperparameters import Hyperparameter  # noqa: F401


def family_classes():
    """Every loss class of this package that declares a family, in order of family name."""
    found, stack = [], list(LosstuneLoss.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("family") and cls.__module__.startswith(__name__ + "."):
            found.append(cls)
    return sorted(found, key=lambda cls: cls.family)
