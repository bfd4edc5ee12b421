"""Iris classifier: serving/ is what the service runs, training/ is what makes its model."""
