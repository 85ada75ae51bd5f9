"""Atelier: a self-hosted AI platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atelier")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
