"""Serving: model loading, start-up checks and prediction; never imports the training code."""
