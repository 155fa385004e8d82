"""Typer commands; each only parses arguments and calls the Python API."""
