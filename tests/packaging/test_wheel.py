"""Installed from a wheel, from another directory, it works: the wheel is the whole product.

The module-scoped ``installed`` fixture builds the wheel, installs it into a fresh venv (its dependencies
come from PyPI through pip's cache) and yields that venv with an environment that points nowhere into this
checkout: no ``PYTHONPATH``, no ``ORCHESTRA_*`` or ``RAY_*`` set by the test session, no ``PATH`` entry or
other variable naming the checkout. Commands run with cwd in an empty directory outside it, in a process
group of their own that is killed afterwards, so nothing is left running. The venv (about 600 MB, Ray
included) is deleted when the module ends.

The wheel is built from a copy of the checkout without its build products (``build/``, ``*.egg-info``,
venvs, caches): setuptools builds in the source tree, where a stale ``build/lib`` would put modules deleted
since into the wheel, and the checkout stays as it was.

To test another installed command, take ``installed`` and start ``installed.bin(name)`` with
``env=installed.env`` and ``cwd=installed.new_workdir()``, as the tests below do through ``installed.run``
or, for ``orchestra serve`` (which runs until Ctrl-C and writes its dev key where it runs), directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

import orchestra
from orchestra.cli._embedded import free_port
from tests.packaging._process import checked, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TEAMS = {"coding-team", "research-team", "creative-team", "coding-debate"}
# Not part of the source: what builds, installs, tests and ./dev leave in a checkout.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".orchestra"
)


def outside_env(venv: Path) -> dict[str, str]:
    """This process's environment without anything that points into the checkout or was set by the tests."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not _inside(Path(p), ROOT)]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "ORCHESTRA_", "RAY_", "VIRTUAL_ENV", "CONDA_")) and str(ROOT) not in v
    }
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *path]),
        ORCHESTRA_LLM_PROVIDER="scripted",  # the default without API keys; explicit here
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)


@dataclass(frozen=True)
class Installed:
    """A fresh venv with only the wheel (and its dependencies) installed."""

    root: Path  # the temporary directory holding all of it, removed at the end of the module
    venv: Path
    wheel: Path
    workdir: Path  # empty, outside the checkout: the default cwd of commands
    env: dict[str, str]

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def new_workdir(self) -> Path:
        """Another empty directory outside the checkout, for a command that writes where it runs."""
        return Path(tempfile.mkdtemp(prefix="elsewhere-", dir=self.root))

    def run(
        self, name: str, *args: str, cwd: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """``<venv>/bin/<name> args...`` from ``cwd`` (``workdir``); fails the test unless it exits 0."""
        return checked(run([self.bin(name), *args], cwd=cwd or self.workdir, env=self.env, timeout=timeout))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    try:
        assert not _inside(root, ROOT), f"the temporary directory {root} is inside the checkout"
        venv = root / "venv"
        env = outside_env(venv)
        src = root / "src"
        shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
        checked(run([sys.executable, "-m", "venv", venv], cwd=root, env=env, timeout=300))
        python = venv / "bin" / "python"
        dist = root / "dist"
        checked(
            run(
                [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, src],
                cwd=root,
                env=env,
                timeout=600,
            )
        )
        (wheel,) = dist.glob("ai_orchestra_server-*.whl")
        # Ray and the rest from pip's cache (or PyPI): minutes on a cold cache.
        checked(run([python, "-m", "pip", "install", "--quiet", wheel], cwd=root, env=env, timeout=1800))
        shutil.rmtree(src)
        workdir = root / "elsewhere"
        workdir.mkdir()
        yield Installed(root=root, venv=venv, wheel=wheel, workdir=workdir, env=env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_installed_package_imports_nothing_from_the_checkout(installed: Installed) -> None:
    probe = """
import json, sys
import orchestra, actors, serve_app
import orchestra.cli
from orchestra._edges import load_edge
from orchestra.engine._config import default_config_path

load_edge("connect")  # the Ray edge is found through the installed entry points
files = {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())}
config = str(default_config_path())
print(json.dumps({"files": files, "path": sys.path, "prefix": sys.prefix, "config": config}))
"""
    found = json.loads(installed.run("python", "-c", probe).stdout)

    assert Path(found["prefix"]) == installed.venv
    site = installed.venv / "lib"
    for name in ("orchestra", "actors", "serve_app", "orchestra.cli", "actors.client"):
        assert _inside(Path(found["files"][name]), site), (name, found["files"][name])
    assert not [p for p in found["path"] if p and _inside(Path(p), ROOT)]
    assert not {n: f for n, f in found["files"].items() if f and _inside(Path(f), ROOT)}
    # The shipped swarms.yaml is the one in the wheel, and it is this checkout's configs/swarms.yaml.
    config = Path(found["config"])
    assert _inside(config, site) and config.parent.name == "configs"
    assert config.read_bytes() == (ROOT / "configs" / "swarms.yaml").read_bytes()


def test_orchestra_teams_lists_the_shipped_teams(installed: Installed) -> None:
    out = installed.run("orchestra", "teams").stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip() and not line[0].isspace()}
    shipped = set(yaml.safe_load((ROOT / "configs" / "swarms.yaml").read_text())["teams"])
    assert listed >= TEAMS
    assert listed == shipped


def test_orchestra_run_local_json_prints_a_chat_result(installed: Installed) -> None:
    cwd = installed.new_workdir()
    out = installed.run("orchestra", "run", "--local", "--json", "Write a haiku about actors", cwd=cwd).stdout
    result = orchestra.ChatResult.model_validate(json.loads(out))  # spec §5, unknown fields rejected
    assert result.response.strip()
    assert result.metadata.model.startswith("scripted/")
    assert result.metadata.processing_steps
    assert not list(cwd.iterdir())  # a local run writes nothing where it runs


def test_orchestra_serve_answers_and_stops_on_ctrl_c(installed: Installed) -> None:
    """``orchestra serve`` from the wheel: embedded Redis, Ray and the Serve app, all from the venv."""
    cwd = installed.new_workdir()  # the dev key lands in cwd/.orchestra
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # In the environment of everything it starts, reparented or not (but redis-server overwrites its own).
    mark = f"WHEEL_SERVE_TEST_MARK={uuid.uuid4().hex}"
    name, value = mark.split("=", 1)
    proc = subprocess.Popen(
        [str(installed.bin("orchestra")), "serve", "--port", str(port), "--address", "local"],
        cwd=cwd,
        env={**installed.env, name: value},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = _Output(proc)
    started: dict[tuple[int, int], str] = {}  # (pid, start time) -> command line
    try:
        # Redis, Ray and four deployments on 2 cores: well under a minute here, but bounded.
        output.wait_for(f"AI Orchestra is serving at {url}", timeout=180)
        key = (cwd / ".orchestra" / "dev-key").read_text().strip()
        assert key.startswith("orch_dev_")
        r = httpx.post(
            f"{url}/chat/v2/chat",
            json={"message": "Write a haiku about actors", "optimization_mode": "lite"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        assert r.status_code == 200, (r.status_code, r.text[:2000], output.text()[-4000:])
        body = r.json()
        assert body["success"] is True, body
        assert body["data"]["response"].strip(), body
        assert body["data"]["metadata"]["model"].startswith("scripted/"), body
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 200, (health.status_code, health.text[:2000])
        started.update(_started_by(proc.pid, mark))  # while it runs, so the check below sees them all
        running = started.values()
        assert any("redis-server" in c for c in running) and any("ray::" in c for c in running), running

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 60 s after SIGINT\n{output.text()[-4000:]}") from None
        output.close(timeout=10)
        assert code == 0, f"exited {code}\n{output.text()[-4000:]}"
        assert key in output.text()  # it told us the key it wrote
        with pytest.raises(httpx.TransportError):  # the server is really gone
            httpx.get(f"{url}/health", timeout=2)
        left = _left_of(started, mark, within=30)
        assert not left, f"left running after exit: {left}"
    finally:
        if proc.poll() is None:
            started.update(_started_by(proc.pid, mark))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid, _ in _left_of(started, mark, within=0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        output.close(timeout=5)


class _Output:
    """A command's output, read line by line in a thread: waits are bounded and the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        self._ended = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed under us in close()
            for line in self._stdout:
                self._lines.put(line)
        self._lines.put(None)

    def _take(self, timeout: float) -> str | None:
        """The next line, ``None`` at the end of the output; raises ``queue.Empty`` after ``timeout``."""
        if self._ended:
            return None
        line = self._lines.get(timeout=max(timeout, 0))
        if line is None:
            self._ended = True
        else:
            self._seen.append(line)
        return line

    def wait_for(self, text: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._take(deadline - time.monotonic())
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {timeout} s\n{self.text()[-4000:]}") from None
            if line is None:
                raise AssertionError(f"exited before printing {text!r}\n{self.text()[-4000:]}")
            if text in line:
                return

    def close(self, *, timeout: float) -> None:
        """Read what is left up to the end of the output (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Empty):
            while self._take(deadline - time.monotonic()) is not None:
                pass

    def text(self) -> str:
        return "".join(self._seen)


@dataclass(frozen=True)
class _Process:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: with the pid, one process even if the pid is reused
    marked: bool  # its environment holds the mark
    cmdline: str


def _processes(mark: str) -> dict[int, _Process]:
    """The live processes (zombies left out) by pid."""
    found: dict[int, _Process] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:  # a process gone meanwhile raises
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if fields[0] in ("Z", "X"):
            continue
        pid = int(d.name)
        found[pid] = _Process(pid, int(fields[1]), int(fields[19]), mark.encode() in environ, cmdline[:200])
    return found


def _started_by(root: int, mark: str) -> dict[tuple[int, int], str]:
    """Live processes ``root`` started: its descendants, and any process whose environment holds ``mark``."""
    live = _processes(mark)
    children: dict[int, list[_Process]] = {}
    for p in live.values():
        children.setdefault(p.ppid, []).append(p)
    found = {(p.pid, p.start): p.cmdline for p in live.values() if p.marked}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[(child.pid, child.start)] = child.cmdline
            todo.append(child.pid)
    return found


def _left_of(started: dict[tuple[int, int], str], mark: str, *, within: float) -> dict[tuple[int, int], str]:
    """Which of ``started``, or of the processes holding ``mark``, still run after up to ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        live = _processes(mark)
        left = {
            (p.pid, p.start): p.cmdline
            for p in live.values()
            if p.marked or started.get((p.pid, p.start)) is not None
        }
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)
