"""Shared test helpers: composing configs, running the command line, the development data."""
