"""Train the iris classifier, check it against a quality gate and store it in BentoML.

    python train.py                          # the iris data bundled with scikit-learn
    python train.py --data flowers.csv       # sepal_length,sepal_width,petal_length,petal_width,species
    python train.py --min-accuracy 0.95      # a stricter gate
    python train.py --if-missing             # only if the store has no servable model (make serve)

Exit codes: 0 stored, 1 refused by the quality gate, 2 unusable data or arguments.
Nothing is stored unless the model passes the gate.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import bentoml
import joblib
import sklearn

from iris_classifier.config import FEATURE_NAMES, FEATURE_UNIT, MODEL_NAME
from iris_classifier.data import DataError, TrainingData, load_bundled, load_csv
from iris_classifier.evaluation import fit_and_evaluate, min_rows_per_class, write_report
from iris_classifier.model import WEIGHTS_FILE, LinearModel, build_pipeline
from iris_classifier.training.feature_stats import feature_statistics

logger = logging.getLogger("train")

EXIT_GATE_REFUSED = 1
EXIT_BAD_DATA = 2
MODEL_FILE = "pipeline.joblib"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="CSV to train on (default: bundled iris data)")
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=0.90,
        help="refuse to store a model whose hold-out accuracy is below this (default 0.90)",
    )
    parser.add_argument("--test-size", type=float, default=0.2, help="hold-out fraction (0.2)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (5)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports"),
        help="where the evaluation report of each run is written (reports/<run>/)",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the store already holds a model the service can serve",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.min_accuracy <= 1:
        parser.error("--min-accuracy must be between 0 and 1")
    if not 0 < args.test_size < 1:
        parser.error("--test-size must be between 0 and 1")
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    return args


def library_versions() -> dict[str, str]:
    import numpy
    import pandas

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "bentoml": bentoml.__version__,
    }


def load_data(args: argparse.Namespace) -> TrainingData:
    if args.data is None:
        return load_bundled()
    return load_csv(args.data, min_rows_per_class=min_rows_per_class(args.test_size, args.folds))


def servable_model() -> str | None:
    """Tag of the latest stored model if the service can serve it (it has plain weights)."""
    try:
        model = bentoml.models.get(f"{MODEL_NAME}:latest")
    except bentoml.exceptions.NotFound:
        return None
    metadata = model.info.metadata
    weights = metadata.get("weights_file", WEIGHTS_FILE)
    servable = Path(model.path_of(weights)).is_file() and "feature_stats" in metadata
    return str(model.tag) if servable else None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    if args.if_missing and (servable := servable_model()):
        logger.info("the store already holds %s; not training", servable)
        return 0
    try:
        data = load_data(args)
    except DataError as exc:
        logger.error("unusable training data: %s", exc)
        return EXIT_BAD_DATA
    logger.info(
        "training on %s: %d rows, classes %s", data.source, len(data.species), data.class_names
    )

    pipeline, evaluation = fit_and_evaluate(
        build_pipeline(args.seed), data, test_size=args.test_size, folds=args.folds, seed=args.seed
    )
    run_dir = args.report_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    passed = evaluation.holdout_accuracy >= args.min_accuracy
    summary = {
        "data": data.source,
        "data_sha256": data.sha256,
        "seed": args.seed,
        "min_accuracy": args.min_accuracy,
        "gate": "passed" if passed else "refused",
    }
    if not passed:
        write_report(run_dir, evaluation, summary)
        logger.error(
            "quality gate refused the model: hold-out accuracy %.4f is below the minimum %.4f; "
            "nothing was stored (report: %s)",
            evaluation.holdout_accuracy,
            args.min_accuracy,
            run_dir,
        )
        return EXIT_GATE_REFUSED

    metadata = {
        **summary,
        "metrics": {
            "holdout_accuracy": evaluation.holdout_accuracy,
            "holdout_macro_f1": evaluation.holdout_macro_f1,
            "cv_accuracy_mean": evaluation.cv_accuracy_mean,
            "cv_accuracy_std": evaluation.cv_accuracy_std,
            "confusion_matrix": evaluation.confusion_matrix,
        },
        "class_names": evaluation.class_names,
        "feature_names": list(FEATURE_NAMES),
        "feature_unit": FEATURE_UNIT,
        # The service flags flowers outside these ranges (`out_of_range` in every answer).
        "feature_stats": feature_statistics(data.features),
        "model_file": MODEL_FILE,
        "weights_file": WEIGHTS_FILE,
        "library_versions": library_versions(),
    }
    labels = {
        "framework": "scikit-learn",
        "algorithm": "logistic-regression",
        "dataset": "iris-bundled" if args.data is None else "csv",
    }
    with bentoml.models.create(MODEL_NAME, metadata=metadata, labels=labels) as model_ref:
        joblib.dump(pipeline, model_ref.path_of(MODEL_FILE))
        # The service serves from these plain weights and so never imports scikit-learn.
        LinearModel(pipeline).save(model_ref.path_of(WEIGHTS_FILE))
    summary["model"] = str(model_ref.tag)
    write_report(run_dir, evaluation, summary)
    logger.info(
        "stored %s: hold-out accuracy %.4f, macro-F1 %.4f, cv accuracy %.4f +/- %.4f (report: %s)",
        model_ref.tag,
        evaluation.holdout_accuracy,
        evaluation.holdout_macro_f1,
        evaluation.cv_accuracy_mean,
        evaluation.cv_accuracy_std,
        run_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
