"""Types every part of the package shares: the frozen base model, the optimization mode, identifiers."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["IDENTIFIER_RE", "MODES", "FrozenModel", "Mode"]

Mode = Literal["lite", "balanced", "quality"]
"""An ``optimization_mode``: team size, rounds, models and deadline (configs/swarms.yaml ``modes``)."""

MODES: tuple[Mode, ...] = ("lite", "balanced", "quality")

IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""Client-chosen ids (session ids, WebSocket request ids) and tenants: 1-128 of ``[A-Za-z0-9._:-]``."""


class FrozenModel(BaseModel):
    """Immutable and strict about its fields: an unknown field is an error, never silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")
