"""The Ray edge of AI Orchestra: agent actors, the orchestrator actor, and the client handle.

Thin by design: all behaviour lives in the Ray-free ``orchestra`` core.
"""

from __future__ import annotations

from .agent import AgentActor
from .client import RayChatService, connect
from .orchestrator import Orchestrator
from .runtime import RayRuntime

__all__ = ["AgentActor", "Orchestrator", "RayChatService", "RayRuntime", "connect"]
