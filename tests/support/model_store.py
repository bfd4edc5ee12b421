"""Test helpers: copies of a trained model store, doctored into the bad models start-up refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import yaml

from iris_classifier.model_format import MODEL_FILE

MODEL_NAME = "iris_classifier"


def copy_store(source_home: Path, target_home: Path) -> Path:
    """Copy `source_home`'s model store; return the directory of its latest served model."""
    shutil.copytree(source_home / "models", target_home / "models")
    models = target_home / "models" / MODEL_NAME
    latest = (models / "latest").read_text().strip()
    return models / latest


def stored_metadata(model_dir: Path) -> dict:
    return yaml.safe_load((model_dir / "model.yaml").read_text())["metadata"]


def edit_metadata(model_dir: Path, **changes) -> None:
    manifest_path = model_dir / "model.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    for key, value in changes.items():
        if value is None:
            manifest["metadata"].pop(key, None)
        else:
            manifest["metadata"][key] = value
    manifest_path.write_text(yaml.safe_dump(manifest))


def rename_graph_input(model_dir: Path, new_name: str) -> None:
    model = onnx.load(model_dir / MODEL_FILE)
    old_name = model.graph.input[0].name
    model.graph.input[0].name = new_name
    for node in model.graph.node:
        node.input[:] = [new_name if name == old_name else name for name in node.input]
    onnx.save(model, model_dir / MODEL_FILE)


def rename_graph_output(model_dir: Path, old_name: str, new_name: str) -> None:
    model = onnx.load(model_dir / MODEL_FILE)
    for output in model.graph.output:
        if output.name == old_name:
            output.name = new_name
    for node in model.graph.node:
        node.output[:] = [new_name if name == old_name else name for name in node.output]
    onnx.save(model, model_dir / MODEL_FILE)


def fix_input_rows(model_dir: Path, rows: int) -> None:
    """Give the input a fixed row count, so batches of any other size could not run."""
    model = onnx.load(model_dir / MODEL_FILE)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = rows
    onnx.save(model, model_dir / MODEL_FILE)


def set_graph_property(model_dir: Path, key: str, value: object) -> None:
    model = onnx.load(model_dir / MODEL_FILE)
    props = {entry.key: entry.value for entry in model.metadata_props}
    props[key] = json.dumps(value)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, model_dir / MODEL_FILE)


def break_model(model_dir: Path, case: str) -> str:
    """Make `model_dir` one bad model; return what the refusal must say."""
    if case == "missing-onnx":
        (model_dir / MODEL_FILE).unlink()
        return "model.onnx is missing"
    if case == "corrupt-onnx":
        (model_dir / MODEL_FILE).write_bytes(b"\x08\x07not an onnx graph" * 10)
        return "model.onnx is not a model ONNX Runtime can load"
    if case == "old-json-weights":
        (model_dir / MODEL_FILE).unlink()
        (model_dir / "linear_model.json").write_text("{}")
        edit_metadata(model_dir, format=None, weights_file="linear_model.json")
        return "not an ONNX model"
    if case == "wrong-input-name":
        rename_graph_input(model_dir, "input")
        return "unexpected ONNX input"
    if case == "wrong-output-name":
        rename_graph_output(model_dir, "probabilities", "output_probability")
        return "unexpected ONNX outputs"
    if case == "fixed-batch-size":
        fix_input_rows(model_dir, 1)
        return "unexpected ONNX input"
    if case == "class-names-differ":
        edit_metadata(model_dir, class_names=["setosa", "versicolor", "daisy"])
        return "class names in the metadata"
    if case == "feature-not-sent":
        set_graph_property(
            model_dir, "feature_names", ["sepal_length", "sepal_width", "petal_length", "stem"]
        )
        edit_metadata(
            model_dir, feature_names=["sepal_length", "sepal_width", "petal_length", "stem"]
        )
        return "the contract sends"
    raise ValueError(case)


BAD_MODEL_CASES = [
    "missing-onnx",
    "corrupt-onnx",
    "old-json-weights",
    "wrong-input-name",
    "wrong-output-name",
    "fixed-batch-size",
    "class-names-differ",
    "feature-not-sent",
]
