"""Helpers only the tests use: rendering the kustomize overlays and checking what they hold."""
