"""One Ray instance per request-path setting, each in its own process, all running at once.

Serve's request-path settings (``RAY_SERVE_ENABLE_HA_PROXY`` ...) are read by Ray's processes when they
start, so one Ray instance cannot measure two of them. W3/W4 start one instance per setting side by side
(``python -m benchmarks._instance <workload> <setting>``: its own local Ray, embedded Redis, the orchestra
app and the workload's bare Serve app), then the driver measures them in alternating order. The idle
instance costs a few per cent of a core; CPU per request is counted per instance (its process tree).

Settings:
- ``default``: Ray's and Serve's defaults, Serve's Python proxy (what a user of plain Serve runs);
- ``haproxy``: exactly what ``orchestra serve --host 127.0.0.1`` sets (``serve_app.local_ray_env``):
  HAProxy + direct ingress, loopback-only, Ray's metrics exporter off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["SETTINGS", "Instance", "start_instances"]

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ("default", "haproxy")
_READY = "INSTANCE "


class Instance:
    """A running instance: its process (root of its process tree) and what it serves."""

    def __init__(self, setting: str, proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.setting = setting
        self.proc = proc
        self.info = info

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the instance shuts Serve, Ray and Redis down on EOF
            try:
                self.proc.wait(150)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _spawn(workload: str, setting: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), str(ROOT / "sdk" / "python"), env.get("PYTHONPATH")])
    )
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks._instance", workload, setting],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # Ray's start-up lines go to the terminal
        text=True,
        start_new_session=True,  # its own process group: killed as one if it hangs
    )


def _read_ready(setting: str, stdout: IO[str], deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        line = stdout.readline()
        if not line:
            break
        if line.startswith(_READY):
            info: dict[str, Any] = json.loads(line[len(_READY) :])
            return info
    raise RuntimeError(f"benchmark instance {setting!r} did not start")


def start_instances(workload: str, settings: list[str]) -> list[Instance]:
    """Start one instance per setting (in parallel) and wait until every one answers."""
    procs = {s: _spawn(workload, s) for s in settings}
    out: list[Instance] = []
    try:
        deadline = time.monotonic() + 300
        for setting, proc in procs.items():
            assert proc.stdout is not None
            out.append(Instance(setting, proc, _read_ready(setting, proc.stdout, deadline)))
    except BaseException:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        raise
    return out


# -- the instance process -----------------------------------------------------------------------------


def _serve(workload: str, setting: str) -> None:
    import serve_app

    from ._common import start_ray
    from .w3 import serve_orchestra

    workdir = tempfile.TemporaryDirectory(prefix=f"orchestra-bench-{setting}-")
    if setting == "haproxy":  # "default": Ray's and Serve's own defaults, nothing set
        os.environ.update(serve_app.local_ray_env("haproxy", "127.0.0.1", Path(workdir.name)))
    start_ray(address="local")
    from ray import serve

    from .soak import soak_instance_config, soak_prepare
    from .w3 import w3_instance_config, w3_prepare
    from .w4 import w4_instance_config, w4_prepare

    config, prepare = {
        "w3": (w3_instance_config, w3_prepare),
        "w4": (w4_instance_config, w4_prepare),
        "soak": (soak_instance_config, soak_prepare),
    }[workload]
    raw, extra = config()
    with serve_orchestra(raw, extra_env=extra) as served:
        info = prepare(served)
        info.update(
            {
                "setting": setting,
                "port": served.port,
                "key": served.key,
                "env": {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")},
            }
        )
        print(_READY + json.dumps(info), flush=True)
        os.dup2(2, 1)  # nobody reads our stdout from here on: a full pipe must not block us
        sys.stdin.read()  # until the driver closes our stdin
        if workload != "soak":
            serve.delete("bare")
    workdir.cleanup()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
