"""Shedding real overload fairly: how many requests one ingress replica works on at once.

Rate limits bound what each key may ask for; this bounds what a replica takes on. Below ``capacity``
requests in flight every request is admitted. At capacity a request is still admitted if its key holds
less than its fair share (``capacity`` divided among the keys with requests in flight), up to twice the
capacity in all, so one key's flood cannot push out another key's few requests; otherwise it gets 503
``SERVICE_UNAVAILABLE`` with ``Retry-After`` at once, before any store call or run. Which request is shed
is decided by who holds the most, never by whichever request's timer fires first.
"""

from __future__ import annotations

from orchestra.errors import ServiceUnavailableError

__all__ = ["Admission"]


class Admission:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._total = 0
        self._per_key: dict[str, int] = {}

    @property
    def in_flight(self) -> int:
        return self._total

    def enter(self, key_id: str) -> None:
        """Count a request of ``key_id`` in, or raise ``ServiceUnavailableError`` (shed)."""
        held = self._per_key.get(key_id, 0)
        if self._total >= self.capacity:
            keys = len(self._per_key) + (held == 0)
            fair = max(1, self.capacity // keys)
            if held >= fair or self._total >= 2 * self.capacity:
                raise ServiceUnavailableError(
                    "overloaded: too many requests in flight; retry shortly",
                    details={"reason": "overloaded"},
                    retry_after=1,
                )
        self._total += 1
        self._per_key[key_id] = held + 1

    def leave(self, key_id: str) -> None:
        held = self._per_key.get(key_id, 0)
        if held <= 0:
            return
        self._total -= 1
        if held == 1:
            del self._per_key[key_id]
        else:
            self._per_key[key_id] = held - 1
