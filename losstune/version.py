"""The version of losstune (one place; read by the package, the loss file and the build)."""

__version__ = "0.1.0"
