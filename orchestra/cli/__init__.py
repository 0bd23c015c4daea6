"""The ``orchestra`` command line: ``run``, ``teams``, ``serve``."""

from orchestra.cli._main import main

__all__ = ["main"]
