"""The HTTP API contract: what a request may contain and what a response holds.

Inputs are strict: a feature is a finite JSON number of centimetres in (0, 100]. Strings
(even "1.5" or "nan"), booleans, null, lists and objects are refused, and so are NaN and
Infinity however they are spelled, because a model fed them answers with confident nonsense.
`parse_flower` and `parse_batch` read a seed route's body by these models.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from iris_classifier.flowers import FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.serving.config import MAX_BATCH_ROWS

if TYPE_CHECKING:
    import numpy as np

Centimetres = Annotated[
    float,
    Field(
        strict=True,
        allow_inf_nan=False,
        gt=0,
        le=MAX_FEATURE_CM,
        description=f"A length in cm: a finite number above 0 and at most {MAX_FEATURE_CM:g}.",
    ),
]
Probability = Annotated[float, Field(ge=0, le=1)]
# The flower the API documents as its example; the tests, the load test and the benchmarks
# send it too.
SAMPLE_FLOWER = {"sepal_length": 2, "sepal_width": 4, "petal_length": 2, "petal_width": 4}
BATCH_EXAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
# Up to this many unknown fields are refused one error each; more are refused as one error,
# so a body of thousands of them costs about what it cost to read, not an error each.
MAX_UNKNOWN_FIELDS_LISTED = 5
FEATURES = frozenset(FEATURE_NAMES)


class IrisFeatures(BaseModel):
    """One flower's measurements in centimetres."""

    model_config = ConfigDict(
        extra="forbid",
        # A flower has four keys: caching key strings saves nothing, and a body of unknown keys
        # that never repeat spent much of its refusal filling the cache (loadtest/README.md#history).
        cache_strings=False,
        json_schema_extra={"example": SAMPLE_FLOWER},
    )

    sepal_length: Centimetres
    sepal_width: Centimetres
    petal_length: Centimetres
    petal_width: Centimetres

    @model_validator(mode="before")
    @classmethod
    def _refuse_many_unknown_fields(cls, data: Any) -> Any:
        # Called for every flower of a batch: one length check when nothing is wrong.
        if isinstance(data, dict) and len(data) > len(FEATURES) + 1:
            # Counted with four lookups and named from the first few: however many unknown
            # fields there are, the refusal makes no pass over them beyond the one that read them.
            unknown = len(data) - sum(name in data for name in FEATURES)
            if unknown > MAX_UNKNOWN_FIELDS_LISTED:
                first = itertools.islice(
                    (name for name in data if name not in FEATURES), MAX_UNKNOWN_FIELDS_LISTED
                )
                raise PydanticCustomError(
                    "extra_forbidden",
                    "{count} unknown fields (first: {named})",
                    {"count": unknown, "named": ", ".join(repr(str(name)[:32]) for name in first)},
                )
        return data


class Classification(BaseModel):
    """A single-flower answer: the seed contract plus every class's probability."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    # The seed contract: the species and its probability, rounded to 2 places.
    species: str = Field(alias="class", examples=["setosa"])
    probability: Probability = Field(examples=[0.99])
    probabilities: dict[str, Probability] = Field(
        description="Probability of each class, rounded to 4 places."
    )
    model_version: str = Field(description="Tag of the model in BentoML's model store.")
    out_of_range: list[str] = Field(
        description="Features of this flower outside the range seen in the model's training "
        "data, in request order; [] when none. A range check for extrapolation, not a drift "
        "detector.",
        examples=[["sepal_length", "petal_width"]],
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "flowers": [dict(zip(FEATURE_NAMES, row, strict=True)) for row in BATCH_EXAMPLE]
            }
        },
    )

    flowers: list[IrisFeatures] = Field(min_length=1, max_length=MAX_BATCH_ROWS)


# A typed dict rather than a model for the batch rows: the same JSON, cheaper to validate and
# serialise per row (benchmarks/README.md#history-what-made-it-fast).
BatchPrediction = TypedDict(
    "BatchPrediction", {"class": str, "probability": Probability, "out_of_range": list[str]}
)


class BatchClassification(BaseModel):
    predictions: list[BatchPrediction] = Field(description="One prediction per flower, in order.")
    model_version: str


# A batch's rows read as typed dicts that keep unknown fields, several times cheaper than model
# instances (benchmarks/README.md). A batch read this way with no unknown field in any row is
# one the contract accepts, with the same values (a property test holds the two together); any
# other batch is read again by the contract itself, for its exact errors.
FlowerRow = with_config(ConfigDict(extra="allow"))(
    TypedDict("FlowerRow", dict.fromkeys(FEATURE_NAMES, Centimetres))  # type: ignore[misc]
)
FastBatch = with_config(ConfigDict(extra="forbid"))(
    TypedDict(  # type: ignore[misc]
        "FastBatch",
        # The contract's own bounds on the number of flowers.
        {"flowers": Annotated[list[FlowerRow], *BatchRequest.model_fields["flowers"].metadata]},
    )
)
FAST_BATCH = TypeAdapter(FastBatch)
read_row = operator.itemgetter(*FEATURE_NAMES)
read_flower = operator.attrgetter(*FEATURE_NAMES)


def parse_flower(body: bytes) -> tuple[float, ...]:
    """One flower's features, in FEATURE_NAMES order; the contract's error if refused."""
    return read_flower(IrisFeatures.model_validate_json(body))


def parse_batch(body: bytes) -> np.ndarray:
    """A batch request's flowers as a (rows, 4) float64 array; the contract's error if refused."""
    try:
        rows = FAST_BATCH.validate_json(body)["flowers"]
    except ValidationError:
        rows = None
    if rows is None or any(len(row) != len(FEATURE_NAMES) for row in rows):
        return features_of(BatchRequest.model_validate_json(body).flowers, read_flower)
    return features_of(rows, read_row)


def features_of(flowers: Sequence[Any], read: Callable[[Any], Iterable[float]]) -> np.ndarray:
    # BentoML's main process imports the contract for the OpenAPI document and never predicts:
    # NumPy is loaded by the first batch a worker reads, not by that import.
    import numpy as np

    # One flat pass in C into a float array, in float64 as sent; the model, the range check
    # and the drift bins each read it in single precision, as the one-flower path does.
    shape = (len(flowers), len(FEATURE_NAMES))
    return np.fromiter(
        itertools.chain.from_iterable(map(read, flowers)), dtype=float, count=shape[0] * shape[1]
    ).reshape(shape)
