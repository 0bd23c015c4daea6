"""The SDK's version (also the distribution's, read by its pyproject.toml)."""

__version__ = "0.1.0"
