"""The JavaScript SDK's own tests (``sdk/js/test``, ``node --test``) against the session's live Serve app.

The node process gets the app's URL and keys from the environment: ``ORCHESTRA_API_KEY`` is
``key(40)``, ``ORCHESTRA_TEST_KEYS`` ``key(41)``..``key(51)`` (tests that need a rate-limit bucket of
their own). ``./dev test`` installs the SDK's npm dependencies (``ensure_node_sdk``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import ServeInfo

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "js"
API_KEY_INDEX = 40
TEST_KEY_INDEXES = range(41, 52)


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JavaScript SDK needs Node.js >= 20")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    found = re.match(r"v(\d+)", version)
    if found is None or int(found.group(1)) < 20:
        pytest.fail(f"node {version}: the JavaScript SDK needs Node.js >= 20")
    if not (SDK / "node_modules" / "ws").is_dir():
        pytest.fail("sdk/js has no node_modules: run ./dev test, or npm ci in sdk/js")
    return node


def failures(tap: str) -> str:
    """The ``not ok`` blocks of node's TAP output (what failed and why), for the assertion message."""
    blocks = re.findall(r"^[ \t]*not ok .*?^[ \t]*\.\.\.$", tap, flags=re.M | re.S)
    return "\n".join(blocks)


def test_js_sdk_against_the_live_server(serve_app: ServeInfo) -> None:
    node = node_or_fail()
    env = {
        **os.environ,
        "ORCHESTRA_BASE_URL": serve_app.base_url,
        "ORCHESTRA_API_KEY": serve_app.key(API_KEY_INDEX),
        "ORCHESTRA_TEST_KEYS": ",".join(serve_app.key(i) for i in TEST_KEY_INDEXES),
    }
    files = sorted(str(p.relative_to(SDK)) for p in (SDK / "test").glob("*.test.js"))
    assert files, "no sdk/js/test/*.test.js"
    proc = subprocess.Popen(
        [node, "--test", "--test-concurrency=1", *files],
        cwd=SDK,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"node --test did not finish in 600 s\n{out[-20000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing it started outlives it
    report = f"node --test exited {proc.returncode}\n{failures(out)}\n--- end of output ---\n{out[-8000:]}"
    assert proc.returncode == 0, report
    assert re.search(r"^# fail 0$", out, flags=re.M), report
    # Only the comparison with the API document may be skipped: it lives beside the checkout.
    skipped = [line for line in out.splitlines() if "# SKIP" in line and "original-api-doc.md" not in line]
    assert not skipped, f"tests were skipped: {skipped}\n{out[-8000:]}"
    passed = re.search(r"^# pass (\d+)$", out, flags=re.M)
    assert passed is not None and int(passed.group(1)) >= 30, report
