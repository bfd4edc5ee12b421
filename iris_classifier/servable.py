"""Whether a stored model can be served, answered once for everyone who asks: `train.py
--if-missing`, the service's start-up check and each worker as it loads the model. A model
the service would refuse is therefore one that training replaces.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iris_classifier.drift_bins import DRIFT_BINS, DriftBins
from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.model_format import ModelError
from iris_classifier.onnx_model import OnnxClassifier, load
from iris_classifier.ranges import TrainingRanges


@dataclass(frozen=True)
class ServableModel:
    classifier: OnnxClassifier
    ranges: TrainingRanges
    # None for a model stored before train.py stored them: served, with drift not measured.
    drift_bins: DriftBins | None


def servable_model(directory: Path, metadata: Mapping[str, Any]) -> ServableModel:
    """The checked model of a stored model directory; `ModelError` if the service cannot serve
    it: its ONNX graph fails `load`'s checks, its metadata lacks the training ranges or holds
    drift bins that are unusable."""
    return ServableModel(
        load(directory, metadata, FEATURE_NAMES),
        TrainingRanges.from_metadata(metadata.get("feature_stats"), FEATURE_NAMES),
        DriftBins.from_metadata(metadata.get(DRIFT_BINS), FEATURE_NAMES),
    )


def check() -> None:
    """`servable_model` on the model a JSON request on stdin names; run by service.py in a
    short-lived child process, so that BentoML's arbiter, which never predicts, holds neither
    ONNX Runtime nor NumPy. Exit status 1 with one line if it cannot serve."""
    request = json.load(sys.stdin)
    try:
        servable_model(Path(request["directory"]), request["metadata"])
    except ModelError as exc:
        raise SystemExit(str(exc)) from None  # the one line, on stderr, and exit status 1
