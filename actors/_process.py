"""Process-wide settings of the processes that host the runtime: agent actors, coordinators, replicas."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc(threshold: int, *, freeze: bool = True) -> None:
    """Collect what start-up left, freeze the survivors (modules, Ray, pydantic schemas, the config: they
    live as long as the process) out of every later collection, and collect the young generation every
    ``threshold`` allocations instead of CPython's 700.

    Under a burst of runs, thousands of messages, tasks and futures are alive at once and survive young
    collections, so with the defaults the collector kept rescanning them and everything frozen here: W1's
    coordinator spent about half its CPU in it. Serve freezes its replicas after ``__init__`` the same
    way (``RAY_SERVE_FREEZE_GC_ON_STARTUP``), so its replicas pass ``freeze=False`` rather than collect
    twice at start-up. ``threshold`` 0 keeps CPython's defaults.
    """
    if threshold <= 0:
        return
    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(threshold, 10, 10)
