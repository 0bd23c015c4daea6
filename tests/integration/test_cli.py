"""The README's run command: `orchestra serve` from start to Ctrl-C, and configs/serve.yaml itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from orchestra.cli._embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_serve_yaml_is_a_serve_config_for_this_app() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    app = schema.applications[0]
    assert app.import_path == "serve_app:app"
    names = {d.name for d in app.deployments}
    assert names == {"Ingress", "ModeLite", "ModeBalanced", "ModeQuality"}
    for d in app.deployments:
        assert d.ray_actor_options.num_cpus == 0  # starts on 2 cores
        assert d.autoscaling_config["min_replicas"] >= 1


def test_orchestra_serve_runs_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "ORCHESTRA_REDIS_URL", "ORCHESTRA_API_KEYS", "ORCHESTRA_CONFIG")
    }
    env["ORCHESTRA_SCRIPTED_LATENCY_S"] = "0.01"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli", "serve", "--port", str(port), "--address", "local"],
        cwd=tmp_path,  # the dev key lands in tmp_path/.orchestra
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops the server" in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}" in output, output[-2000:]
        key = (tmp_path / ".orchestra" / "dev-key").read_text().strip()
        assert key in output and re.match(r"^orch_dev_", key)
        r = httpx.post(
            f"http://127.0.0.1:{port}/chat/v2/chat",
            json={"message": "Write a haiku", "optimization_mode": "lite"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["data"]["metadata"]["model"].startswith("scripted/")
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "healthy"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    with httpx.Client() as c:  # the server is really gone
        try:
            c.get(f"http://127.0.0.1:{port}/health", timeout=2)
            raise AssertionError("still serving after Ctrl-C")
        except httpx.TransportError:
            pass
