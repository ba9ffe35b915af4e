"""The Iris features as every component names them (model input order)."""

from __future__ import annotations

# The model server's request fields, the trainer's metadata "features", the load generator's
# payload keys.
FEATURE_NAMES: tuple[str, str, str, str] = (
    "sepal_length",
    "sepal_width",
    "petal_length",
    "petal_width",
)
SPECIES: tuple[str, str, str] = ("setosa", "versicolor", "virginica")
# The seed's ranges (cm), i.e. the min/max of each Iris feature.
FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "sepal_length": (4.3, 7.9),
    "sepal_width": (2.0, 4.4),
    "petal_length": (1.0, 6.9),
    "petal_width": (0.1, 2.5),
}
