"""Training: data checks, estimators, export and evaluation. Never imported when serving."""
