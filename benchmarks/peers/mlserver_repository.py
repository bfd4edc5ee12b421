"""Write an MLServer model repository serving the iris classifier (run with MLServer's Python).

    build/mlserver-venv/bin/python benchmarks/peers/mlserver_repository.py DIRECTORY

The model is the service's default: a seeded multinomial logistic regression fitted on the
same 80 % stratified split of the iris data bundled with scikit-learn. It runs in MLServer's
own environment so the pickle matches the scikit-learn that MLServer loads it with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

SEED = 42
MODEL_NAME = "iris_classifier"


def main(directory: Path) -> None:
    data = load_iris()
    features, _, labels, _ = train_test_split(
        data.data, data.target, test_size=0.2, stratify=data.target, random_state=SEED
    )
    model = LogisticRegression(
        C=1.0, solver="newton-cholesky", tol=1e-8, max_iter=1000, random_state=SEED
    ).fit(features, labels)
    model_dir = directory / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            },
            indent=2,
        )
    )
    # One process, as every other server in the benchmark: inference in the server process
    # itself rather than handed to a pool over IPC, which only costs time on one CPU.
    (directory / "settings.json").write_text(
        json.dumps({"debug": False, "parallel_workers": 0, "metrics_endpoint": None}, indent=2)
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
