"""Serving: what the service needs at run time. Never imports training code, scikit-learn,
pandas or SciPy, so serving processes and the image stay small."""
