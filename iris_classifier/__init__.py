"""Iris classifier: API contract, training data handling and the fitted model's fast path."""
