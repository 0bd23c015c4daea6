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

To test another installed command (``orchestra serve`` say), take ``installed`` and start
``installed.bin("orchestra")`` with ``env=installed.env`` and ``cwd=installed.new_workdir()`` (``serve``
writes its dev key there), as the tests below do through ``installed.run``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import orchestra

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TEAMS = {"coding-team", "research-team", "creative-team", "coding-debate"}
# Not part of the source: what builds, installs, tests and ./dev leave in a checkout.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".orchestra"
)


def run(
    argv: Sequence[str | os.PathLike[str]], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to the end in its own process group, then kill whatever it left in that group."""
    args = [str(a) for a in argv]
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{args} did not finish in {timeout} s\n{out[-2000:]}\n{err[-4000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result


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
