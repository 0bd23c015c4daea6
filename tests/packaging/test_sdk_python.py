"""``pip install ./sdk/python`` in a fresh venv: the SDK installs and imports without Ray or the server.

Modelled on ``test_wheel.py`` (whose helpers it uses): the SDK's folder is copied out of the checkout
without build products, installed into a fresh venv (dependencies from pip's cache or PyPI), and probed
from an empty directory outside the checkout with an environment that points nowhere into it.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_wheel import NOT_SOURCE, ROOT, _inside, checked, outside_env, run

pytestmark = pytest.mark.slow

SDK = ROOT / "sdk" / "python"
# What the server needs and a client must not pull in (pydantic is shared by both, and allowed).
SERVER_ONLY = {
    "ai-orchestra-server",
    "ray",
    "redis",
    "openai",
    "anthropic",
    "prometheus-client",
    "pydantic-settings",
    "pyyaml",
    "fastapi",
    "starlette",
    "uvicorn",
}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("sdk")
    try:
        assert not _inside(root, ROOT)
        env = outside_env(root / "venv")
        src = root / "src"
        shutil.copytree(SDK, src, ignore=NOT_SOURCE)
        checked(run([sys.executable, "-m", "venv", root / "venv"], cwd=root, env=env, timeout=300))
        python = root / "venv" / "bin" / "python"
        checked(run([python, "-m", "pip", "install", "--quiet", src], cwd=root, env=env, timeout=900))
        shutil.rmtree(src)
        workdir = root / "elsewhere"
        workdir.mkdir()
        yield python, env, workdir
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_pip_install_pulls_no_server_dependency(venv: tuple[Path, dict[str, str], Path]) -> None:
    python, env, workdir = venv
    listed = checked(run([python, "-m", "pip", "list", "--format=json"], cwd=workdir, env=env, timeout=120))
    names = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert {"ai-orchestra", "httpx", "websockets", "pydantic"} <= names
    assert names & SERVER_ONLY == set()


def test_the_installed_sdk_imports_and_works_alone(venv: tuple[Path, dict[str, str], Path]) -> None:
    python, env, workdir = venv
    probe = """
import json, sys
import ai_orchestra
from ai_orchestra import APIConnectionError, Client

try:
    import orchestra
except ImportError:
    server = None
else:
    server = orchestra.__file__
with Client(api_key="k", base_url="http://127.0.0.1:9", max_retries=0) as client:
    try:
        client.health()
    except APIConnectionError as error:
        failure = type(error).__name__
typed = (__import__("pathlib").Path(ai_orchestra.__file__).parent / "py.typed").exists()
loaded = [m for m in ("orchestra", "ray", "actors", "serve_app") if m in sys.modules]
print(json.dumps({"file": ai_orchestra.__file__, "version": ai_orchestra.__version__, "server": server,
                  "failure": failure, "typed": typed, "loaded": loaded}))
"""
    found = json.loads(checked(run([python, "-c", probe], cwd=workdir, env=env, timeout=120)).stdout)
    assert _inside(Path(found["file"]), python.parent.parent) and not _inside(Path(found["file"]), ROOT)
    assert found["version"] == "0.1.0" and found["typed"]
    assert found["server"] is None and found["loaded"] == []
    assert found["failure"] == "APIConnectionError"  # a closed port: a typed connection error, not a crash
