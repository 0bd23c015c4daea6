"""Multi-node: the app on a three-node ray.cluster_utils.Cluster spreads agents and replicas over
nodes, and removing a worker node mid-load costs only retried turns or clean envelope errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_three_nodes_spread_and_a_lost_worker_node_costs_only_clean_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cluster.scenario"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = json.loads(lines[-1])
    assert seen["agent_nodes"] > 1 and seen["replica_nodes"] > 1, seen  # placed on several nodes
    outcomes = seen["outcomes"]
    assert outcomes.get("200", 0) > 0, seen
    # Every chat ended 200 or with a clean envelope error (a 503/504 with its code), never a 500 or a
    # dropped connection.
    assert set(outcomes) <= {"200", "503:SERVICE_UNAVAILABLE", "504:TIMEOUT_ERROR"}, seen
