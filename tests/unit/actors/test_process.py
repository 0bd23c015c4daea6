"""The garbage-collector settings of the processes hosting the runtime (each check in a fresh interpreter:
they are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _after(threshold: int, freeze: bool = True) -> dict[str, object]:
    code = (
        "import gc, json, sys; sys.path.insert(0, sys.argv[1]); "
        "from actors._process import tune_gc; before = gc.get_threshold(); "
        f"tune_gc({threshold}, freeze={freeze}); "
        "print(json.dumps({'before': before, 'after': gc.get_threshold(), 'frozen': gc.get_freeze_count()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_startup_objects_are_frozen_and_young_collections_are_rarer() -> None:
    seen = _after(50_000)
    assert seen["after"] == [50_000, 10, 10]
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000  # modules, Ray, pydantic schemas


def test_zero_keeps_cpythons_defaults() -> None:
    seen = _after(0)
    assert seen["after"] == seen["before"]
    assert seen["frozen"] == 0


def test_a_serve_replica_sets_only_the_threshold_serve_freezes_it_itself() -> None:
    seen = _after(50_000, freeze=False)
    assert seen["after"] == [50_000, 10, 10]
    assert seen["frozen"] == 0
