"""Iris classifier: serving/ is what the service runs, training/ is what makes its model, and the
modules beside them are what both share (the flowers, the model format, the ONNX model and the
servable-model check). Neither side imports the other."""

import os

# ONNX Runtime's PyPI builds carry Microsoft's telemetry client, which starts with the runtime
# unless this is set before it loads: a model server must not phone home (and the runtime's
# warning that it cannot store a device ID on a read-only root would break the JSON log).
# Set here, as the package loads, so that serving and training processes both run without it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
