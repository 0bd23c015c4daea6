"""The benchmark command's results file: a run of some workloads keeps the others' results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import merge_report

OLD = {"date": "2026-11-24", "commit": "aaaaaaa"}
NEW = {"date": "2026-11-25", "commit": "bbbbbbb"}


def test_a_partial_run_keeps_the_other_workloads_and_says_when_each_was_measured(tmp_path: Path) -> None:
    path = tmp_path / "results-full.json"
    first = {"machine": OLD, "mode": "full", "results": {"w1": {"v": 1}, "w4": {"v": 4}}}
    path.write_text(json.dumps(merge_report(path, first)))

    second = {"machine": NEW, "mode": "full", "results": {"w4": {"v": 44}}}
    merged = merge_report(path, second)

    assert merged["machine"] == NEW
    assert merged["results"]["w1"] == {"v": 1, "measured": OLD}
    assert merged["results"]["w4"] == {"v": 44, "measured": NEW}


def test_files_without_stamps_get_their_runs_machine(tmp_path: Path) -> None:
    path = tmp_path / "results-quick.json"
    path.write_text(json.dumps({"machine": OLD, "results": {"w2": {"v": 2}}}))
    merged = merge_report(path, {"machine": NEW, "mode": "quick", "results": {"w3": {"v": 3}}})
    assert merged["results"] == {"w2": {"v": 2, "measured": OLD}, "w3": {"v": 3, "measured": NEW}}


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"results": {"w1": 5}}'])
def test_an_unreadable_file_is_replaced_not_merged(tmp_path: Path, content: str) -> None:
    path = tmp_path / "results-full.json"
    path.write_text(content)
    merged = merge_report(path, {"machine": NEW, "mode": "full", "results": {"w1": {"v": 1}}})
    assert merged["results"] == {"w1": {"v": 1, "measured": NEW}}
