"""Catalog and site tooling, run as `python -m tools <command>`."""
