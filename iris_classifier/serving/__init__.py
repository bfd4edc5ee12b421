"""Serving: model loading, start-up checks, prediction and what the service reports about
them, HTTP layers, logging and shutdown. Never imports training code, scikit-learn, pandas or
SciPy, so serving processes and the image stay small."""

import os

# ONNX Runtime's PyPI builds carry Microsoft's telemetry client, which starts with the runtime
# unless this is set before it loads: a model server must not phone home (and the runtime's
# warning that it cannot store a device ID on a read-only root would break the JSON log).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
