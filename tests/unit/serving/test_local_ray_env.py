"""``serve_app.local_ray_env``: the environment ``orchestra serve`` gives a new local Ray (no Ray started)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import serve_app

# The defaults header and the listener lines of the config Ray 2.60's HAProxy template renders
# (haproxy_templates.py).
CONFIG = """defaults
    mode http
frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind 127.0.0.1:8000
listen stats
  bind *:8404
  stats enable
"""


def test_serve_proxy_on_loopback() -> None:
    env = serve_app.local_ray_env("serve", "127.0.0.1", Path("/nonexistent"))
    assert env == {
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_task_events_report_interval_ms": "0",
        "RAY_enable_metrics_collection": "0",
    }


def test_haproxy_on_all_interfaces_keeps_rays_listeners(tmp_path: Path) -> None:
    env = serve_app.local_ray_env("haproxy", "0.0.0.0", tmp_path)
    if env["RAY_SERVE_ENABLE_HA_PROXY"] == "0":
        pytest.skip("no HAProxy binary installed")
    wrapper = tmp_path / "haproxy-wrapper"
    assert env == {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_task_events_report_interval_ms": "0",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
    }
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    run = subprocess.run([str(wrapper), "-db", "-f", str(config), "-v"], capture_output=True, text=True)
    assert run.returncode == 0 and "HAProxy" in run.stdout, run.stderr
    text = config.read_text()
    # the listeners stay where Ray's template put them; the headers get their bound all the same
    assert "bind *:8404" in text and "bind :9101" in text
    assert "timeout http-request 10s" in text


def test_haproxy_on_loopback_rebinds_stats_and_metrics_to_loopback(tmp_path: Path) -> None:
    env = serve_app.local_ray_env("haproxy", "127.0.0.1", tmp_path)
    if env["RAY_SERVE_ENABLE_HA_PROXY"] == "0":
        pytest.skip("no HAProxy binary installed")
    assert env["RAY_enable_metrics_collection"] == "0"
    ports = {env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]}
    assert len(ports) == 2 and not ports & {"8404", "9101"}
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    # The wrapper rewrites the config, then runs the real binary (-v: print the version and exit).
    run = subprocess.run(
        [env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(config), "-v"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0 and "HAProxy" in run.stdout, run.stderr
    binds = [line.strip() for line in config.read_text().splitlines() if line.strip().startswith("bind")]
    assert binds == ["bind 127.0.0.1:9101", "bind 127.0.0.1:8000", "bind 127.0.0.1:8404"]
    assert config.read_text().count("timeout http-request 10s") == 1


def test_unknown_proxy_is_refused() -> None:
    with pytest.raises(ValueError, match="proxy must be one of"):
        serve_app.local_ray_env("nginx", "127.0.0.1", Path("/nonexistent"))
