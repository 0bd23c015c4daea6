"""The Ray edge, found at run time through entry points, so the core never imports it.

``actors/`` and ``serve_app.py`` depend on ``orchestra``; ``orchestra.connect()`` and ``orchestra serve``
still need them. Instead of importing them (a cycle, and Ray in every ``import orchestra``), the core
looks them up by name in the entry-point group ``orchestra.edges`` that ``pyproject.toml`` declares:

- ``connect``: ``actors.client:connect``, the handle to the orchestrator actors;
- ``serve``: ``serve_app:run_server``, which runs the Serve application until stopped.

Another package could register its own edge under the same names (a different cluster runtime, say).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from orchestra.errors import ConfigError

__all__ = ["load_edge"]

GROUP = "orchestra.edges"


def load_edge(name: str) -> Any:
    """The object registered as ``name`` in ``orchestra.edges``; ``ConfigError`` when none is."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise ConfigError(
            f"no {name!r} entry point in group {GROUP!r}: install the package (pip install -e .) so "
            "its entry points are registered",
            details={"field": GROUP, "reason": f"{name} missing"},
        )
    return next(iter(found)).load()
