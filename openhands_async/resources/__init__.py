"""Thin per-endpoint-group classes: paths, parameters and models, no HTTP details."""
