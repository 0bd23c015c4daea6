"""The README's run command: `orchestra serve` from start to Ctrl-C, and configs/serve.yaml itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def _serve(tmp_path: Path, port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`orchestra serve` as the README runs it, in tmp_path (its data lands in tmp_path/.orchestra);
    ``extra_env`` on top (e.g. a slower scripted model)."""
    # What the session's own Serve app was given (its Redis, keys, hashing secret...) is not the CLI's.
    kept = ("ORCHESTRA_LLM_PROVIDER", "ORCHESTRA_BODY_IDLE_S")
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "RAY_ADDRESS" and (not k.startswith("ORCHESTRA_") or k in kept)
    }
    env["ORCHESTRA_SCRIPTED_LATENCY_S"] = "0.01"
    env.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli", "serve", "--port", str(port), "--address", "local"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> str:
    lines: list[str] = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops the server" in line:
            break
    return "".join(lines)


def _stop(proc: subprocess.Popen[str], port: int) -> None:
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


def test_orchestra_serve_runs_answers_stops_on_ctrl_c_and_keeps_sessions(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(tmp_path, port)
    try:
        output = _wait_ready(proc)
        assert url in output, output[-2000:]
        key = (tmp_path / ".orchestra" / "dev-key").read_text().strip()
        assert key in output and re.match(r"^orch_dev_", key)
        auth = {"Authorization": f"Bearer {key}"}
        body = {"message": "Write a haiku", "optimization_mode": "lite", "session_id": "kept"}
        r = httpx.post(f"{url}/chat/v2/chat", json=body, headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()["data"]["metadata"]["model"].startswith("scripted/")
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "healthy"
        first = r.json()["data"]["response"]
        _notebook_joins_the_running_server(tmp_path, url, key)
        _keys_cli_uses_the_running_servers_store(tmp_path, url)
    finally:
        _stop(proc, port)
    # Started again in the same directory: the dev key still works and the session has its turn.
    proc = _serve(tmp_path, port)
    try:
        output = _wait_ready(proc)
        assert url in output and key in output, output[-2000:]
        session = httpx.get(f"{url}/chat/v2/sessions/kept", headers=auth, timeout=30)
        assert session.status_code == 200, session.text
        turns = session.json()["data"]["turns"]
        assert [t["response"] for t in turns] == [first]
        again = httpx.post(f"{url}/chat/v2/chat", json=body, headers=auth, timeout=60)
        assert again.status_code == 200 and again.json()["data"]["execution_mode"].startswith("session:")
        # Ctrl-C during a run: the server drains it (graceful shutdown) before it exits.
        long = {"message": "Debate", "swarm_type": "coding-debate", "optimization_mode": "quality"}
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(httpx.post, f"{url}/chat/v2/chat", json=long, headers=auth, timeout=120)
            time.sleep(0.5)
            assert not running.done()
            proc.send_signal(signal.SIGINT)
            drained = running.result()
        assert drained.status_code == 200, drained.text
        assert len(drained.json()["data"]["metadata"]["processing_steps"]) > 4
    finally:
        _stop(proc, port)


JOIN_SCRIPT = """
import json, sys
import ray
import orchestra

def agents():
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("agent-"))

handle = orchestra.connect(api_key=sys.argv[1])  # no address: finds the server of this directory
before = agents()
result = handle.chat("and from the notebook", session_id="joined", optimization_mode="lite")
print(json.dumps({
    "execution_mode": result.execution_mode,
    "turns": [t.message for t in handle.session("joined").turns],
    "agents_before": before,
    "agents_after": agents(),
}))
"""


def _notebook_joins_the_running_server(tmp_path: Path, url: str, key: str) -> None:
    """``orchestra.connect()`` started in the server's directory joins it: same sessions, same agents."""
    import json

    auth = {"Authorization": f"Bearer {key}"}
    body = {"message": "over HTTP", "optimization_mode": "lite", "session_id": "joined"}
    assert httpx.post(f"{url}/chat/v2/chat", json=body, headers=auth, timeout=60).status_code == 200
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ORCHESTRA_REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-c", JOIN_SCRIPT, key], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # the HTTP turn is in the notebook's session, and the notebook's turn continued it
    assert seen["turns"] == ["over HTTP", "and from the notebook"], seen
    assert seen["execution_mode"].startswith("session:")
    # the notebook used the server's live agent actors: none was created for it
    assert seen["agents_before"] and seen["agents_after"] == seen["agents_before"], seen
    session = httpx.get(f"{url}/chat/v2/sessions/joined", headers=auth, timeout=30)
    assert [t["message"] for t in session.json()["data"]["turns"]] == ["over HTTP", "and from the notebook"]


def _keys_cli_uses_the_running_servers_store(tmp_path: Path, url: str) -> None:
    """``orchestra keys`` run in the server's directory finds its embedded store (server.json) and its
    hashing secret (``.orchestra/key-hash-secret``, mode 0600): a key it creates works over HTTP, and
    once revoked stops working."""
    import json

    secret = tmp_path / ".orchestra" / "key-hash-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ORCHESTRA_REDIS_URL", "ORCHESTRA_KEY_HASH_SECRET", "ORCHESTRA_API_KEYS")
    }

    def keys(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "orchestra.cli", "keys", *argv],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    created = json.loads(keys("create", "--name", "from-cli", "--json"))
    auth = {"Authorization": f"Bearer {created['key']}"}
    me = httpx.get(f"{url}/keys/v2/me", headers=auth, timeout=30)
    assert me.status_code == 200 and me.json()["data"]["key"]["name"] == "from-cli", me.text
    assert "from-cli" in keys("list") and created["key"] not in keys("list")
    keys("revoke", "from-cli")
    time.sleep(2.5)  # the replicas' key cache bound (2 s)
    assert httpx.get(f"{url}/keys/v2/me", headers=auth, timeout=30).status_code == 401
