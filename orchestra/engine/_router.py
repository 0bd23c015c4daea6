"""Chooses a team for a message that names none.

Rule (documented in configs/swarms.yaml): the rules are checked in order; the first rule with a keyword
found in the message as a whole word or phrase (case-insensitive) wins; otherwise ``router.default``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from orchestra.engine._config import RouterConfig

__all__ = ["route"]


@lru_cache(maxsize=256)
def _pattern(keyword: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])" + re.escape(keyword.lower()) + r"(?![\w-])")


def route(message: str, router: RouterConfig) -> tuple[str, str]:
    """(team, reason) for ``message``; reason says which keyword matched or that the default applied."""
    text = message.lower()
    for rule in router.rules:
        for keyword in rule.keywords:
            if _pattern(keyword).search(text):
                return rule.team, f"keyword {keyword!r}"
    return router.default, "default"
