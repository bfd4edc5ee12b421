"""Serving: the one Predictor over the checked model (iris_classifier/servable.py) and what the
service reports about it, HTTP layers, logging and shutdown. Never imports training code,
scikit-learn, pandas or SciPy, so serving processes and the image stay small."""
