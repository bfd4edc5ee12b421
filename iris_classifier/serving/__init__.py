"""Serving: model loading, start-up checks, prediction and what the service reports about
them, HTTP layers, logging and shutdown. Never imports training code, scikit-learn, pandas or
SciPy, so serving processes and the image stay small."""
