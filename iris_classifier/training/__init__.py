"""Training: estimators, ONNX export with its parity gate, data layouts and model comparison."""
