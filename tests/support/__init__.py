"""Helpers only the tests use: manifest checks, stored models to break, a reference model."""
