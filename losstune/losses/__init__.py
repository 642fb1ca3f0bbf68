"""losstune's losses: pure `keras.ops` functions plus thin `keras.losses.Loss` subclasses."""
