"""Train the iris classifier, check it, export it to ONNX and store it in BentoML.

    python train.py                          # logistic regression on the bundled iris data
    python train.py --model random-forest    # or gradient-boosting, svm
    python train.py --compare                # every estimator on one split: a report, no model
    python train.py --data iris.data         # UCI's file, Kaggle's Iris.csv, or our own CSV
    python train.py --data f.csv --columns sepal_length=SL,sepal_width=SW,petal_length=PL,petal_width=PW,species=Kind
    python train.py --min-accuracy 0.95      # a stricter quality gate
    python train.py --if-missing             # only if the store has no servable model (make serve)

Exit codes: 0 stored (or compared), 1 refused by the quality gate or the ONNX parity gate,
2 unusable data or arguments. Nothing is stored unless the model passes both gates.
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

from iris_classifier import model_format
from iris_classifier.drift_bins import DRIFT_BINS
from iris_classifier.flowers import FEATURE_NAMES, FEATURE_UNIT, MODEL_NAME
from iris_classifier.servable import servable_model
from iris_classifier.training.data import DataError, TrainingData, load_bundled, load_csv
from iris_classifier.training.estimators import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    build_pipeline,
    hyperparameters,
)
from iris_classifier.training.evaluation import fit_and_evaluate, min_rows_per_class, write_report
from iris_classifier.training.feature_stats import drift_bins, feature_statistics
from iris_classifier.training.layouts import parse_column_mapping
from iris_classifier.training.onnx_export import opset_versions
from iris_classifier.training.parity import TOLERANCE, ParityError, export_checked

logger = logging.getLogger("train")

EXIT_GATE_REFUSED = 1
EXIT_BAD_DATA = 2
# The fitted scikit-learn pipeline, kept for reproducibility (and the benchmark baselines) in a
# store entry of its own: the service references only MODEL_NAME, so no pickle reaches the
# Bento, the image or a serving process.
PIPELINE_MODEL_NAME = f"{MODEL_NAME}_sklearn"
PIPELINE_FILE = "pipeline.joblib"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="CSV to train on (default: bundled iris data)")
    parser.add_argument(
        "--model",
        choices=sorted(ESTIMATORS),
        default=DEFAULT_ESTIMATOR,
        help="the estimator to train (default: %(default)s)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="train every estimator on the same split and write a comparison report; store nothing",
    )
    parser.add_argument(
        "--columns",
        metavar="NAME=COLUMN,...",
        help="which CSV column holds each of "
        f"{', '.join([*FEATURE_NAMES, 'species'])}; other columns are ignored",
    )
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=0.90,
        help="refuse to store a model whose hold-out accuracy is below this (default: %(default)s)",
    )
    parser.add_argument(
        "--test-size", type=float, default=0.2, help="hold-out fraction (default: %(default)s)"
    )
    parser.add_argument(
        "--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=Path("reports"),
        help="where the evaluation report of each run is written, in <run>/ (default: %(default)s)",
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
    if args.columns is not None:
        if args.data is None:
            parser.error("--columns needs --data")
        try:
            args.columns = parse_column_mapping(args.columns)
        except ValueError as exc:
            parser.error(f"--columns: {exc}")
    return args


def library_versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import pandas
    import skl2onnx

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "bentoml": bentoml.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def load_data(args: argparse.Namespace) -> TrainingData:
    if args.data is None:
        return load_bundled()
    return load_csv(
        args.data,
        min_rows_per_class=min_rows_per_class(args.test_size, args.folds),
        columns=args.columns,
    )


def servable_stored_tag() -> str | None:
    """Tag of the latest stored model if the service would serve it (it passes its checks)."""
    try:
        model = bentoml.models.get(f"{MODEL_NAME}:latest")
    except bentoml.exceptions.NotFound:
        return None
    try:
        servable_model(Path(model.path), model.info.metadata)
    except model_format.ModelError as exc:
        logger.info("the stored %s cannot be served (%s); training a new one", model.tag, exc)
        return None
    return str(model.tag)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    if args.if_missing and (servable := servable_stored_tag()):
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
    run_dir = args.report_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    if args.compare:
        from iris_classifier.training.compare import compare_estimators

        report = compare_estimators(
            data, run_dir, test_size=args.test_size, folds=args.folds, seed=args.seed
        )
        logger.info("compared %s; nothing was stored (report: %s)", ", ".join(ESTIMATORS), report)
        return 0

    pipeline, evaluation, holdout = fit_and_evaluate(
        build_pipeline(args.model, args.seed),
        data,
        test_size=args.test_size,
        folds=args.folds,
        seed=args.seed,
    )
    passed = evaluation.holdout_accuracy >= args.min_accuracy
    summary = {
        "estimator": args.model,
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

    try:
        onnx_model, parity = export_checked(
            pipeline, holdout, feature_names=FEATURE_NAMES, seed=args.seed
        )
    except ParityError as exc:
        write_report(run_dir, evaluation, {**summary, "parity": "refused"})
        logger.error("parity gate refused the model: %s; nothing was stored", exc)
        return EXIT_GATE_REFUSED
    logger.info("ONNX parity within %g: %s", TOLERANCE, parity.describe())

    statistics = feature_statistics(data.features)
    metadata = {
        **summary,
        "format": model_format.MODEL_FORMAT,
        "model_file": model_format.MODEL_FILE,
        "hyperparameters": hyperparameters(pipeline),
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
        "precision": parity.precision,
        "input": {
            "name": model_format.INPUT_NAME,
            "shape": ["rows", len(FEATURE_NAMES)],
            "dtype": parity.precision,
        },
        "outputs": {
            model_format.LABEL_OUTPUT: {"shape": ["rows"], "dtype": "string"},
            model_format.PROBABILITIES_OUTPUT: {
                "shape": ["rows", len(evaluation.class_names)],
                "dtype": parity.precision,
            },
        },
        "opset": opset_versions(onnx_model),
        "parity": {
            "tolerance": TOLERANCE,
            "max_difference": parity.max_difference,
            "worst_set": parity.worst_set,
            "worst_row": parity.worst_row,
        },
        # The service flags flowers outside these ranges (`out_of_range` in every answer).
        "feature_stats": statistics,
        # The service counts served values in these bins; Prometheus compares their shares.
        DRIFT_BINS: drift_bins(data.features, statistics),
        "library_versions": library_versions(),
    }
    labels = {
        "framework": "onnx",
        "trained_with": "scikit-learn",
        "algorithm": args.model,
        "dataset": "iris-bundled" if args.data is None else "csv",
    }
    # The pipeline entry first: the served entry, created last, takes its version, so the pair
    # shares one version and `iris_classifier:latest` never names a model without its pipeline.
    with bentoml.models.create(
        PIPELINE_MODEL_NAME,
        metadata={"class_names": evaluation.class_names, "estimator": args.model},
        labels={"framework": "scikit-learn", "algorithm": args.model},
    ) as pipeline_ref:
        joblib.dump(pipeline, pipeline_ref.path_of(PIPELINE_FILE))
    metadata["pipeline_model"] = str(pipeline_ref.tag)
    try:
        with bentoml.models.create(
            f"{MODEL_NAME}:{pipeline_ref.tag.version}", metadata=metadata, labels=labels
        ) as model_ref:
            Path(model_ref.path_of(model_format.MODEL_FILE)).write_bytes(onnx_model)
    except BaseException:
        bentoml.models.delete(pipeline_ref.tag)
        raise
    summary["model"] = str(model_ref.tag)
    summary["pipeline"] = str(pipeline_ref.tag)
    write_report(run_dir, evaluation, summary)
    logger.info(
        "stored %s (%s): hold-out accuracy %.4f, macro-F1 %.4f, cv accuracy %.4f +/- %.4f (report: %s)",
        model_ref.tag,
        args.model,
        evaluation.holdout_accuracy,
        evaluation.holdout_macro_f1,
        evaluation.cv_accuracy_mean,
        evaluation.cv_accuracy_std,
        run_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
