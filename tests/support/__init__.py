"""Helpers only the tests use: manifest checks, stored models to break, a reference model, and
the service image built from this checkout."""
