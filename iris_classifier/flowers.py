"""What an iris flower is to this project: its four measurements, their unit and rule, the three
species, and the name the model is stored and served under. Training and serving both read them
here, so a model is trained on exactly what the service accepts."""

from __future__ import annotations

from typing import Any

MODEL_NAME = "iris_classifier"
FEATURE_NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
FEATURE_UNIT = "cm"
CLASS_NAMES = ("setosa", "versicolor", "virginica")

# The size rule: a measurement is a finite number of centimetres in (0, MAX_FEATURE_CM]. The
# largest iris flower on record is far below the limit; anything above it is a unit or typing
# error, and a model fed it answers with confident nonsense.
MAX_FEATURE_CM = 100.0
SIZE_RULE = f"sizes must be above 0 and at most {MAX_FEATURE_CM:g} {FEATURE_UNIT}"


def breaks_size_rule(values: Any) -> Any:
    """True where a value is not a size the rule allows, element-wise over a NumPy array or a
    pandas Series; NaN fails both comparisons."""
    return ~((values > 0) & (values <= MAX_FEATURE_CM))
