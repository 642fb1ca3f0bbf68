"""losstune: find the best loss function for a Keras model, as a KerasTuner search.

    import losstune
    result = losstune.search(build_model, x, y, validation_data=(x_val, y_val), space="imbalanced_multiclass")
    model.compile(optimizer="adam", loss=result.best_loss)
"""

from losstune.version import __version__  # noqa: E402
from losstune import families, spaces, tasks  # noqa: E402
from losstune.class_weights import class_weights_from_counts  # noqa: E402
from losstune.lossfile import deferred_reweighting, export_loss, load_loss  # noqa: E402
from losstune.hypermodel import LossHyperModel  # noqa: E402
from losstune.result import SearchResult  # noqa: E402
from losstune.search import search  # noqa: E402
from losstune.lossspace import LossSpace  # noqa: E402

__all__ = [
    "LossHyperModel",
    "LossSpace",
    "SearchResult",
    "class_weights_from_counts",
    "deferred_reweighting",
    "export_loss",
    "families",
    "load_loss",
    "search",
    "spaces",
    "tasks",
]
