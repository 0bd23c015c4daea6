"""Execute the notebooks in notebooks/ against the session's Ray, so they never rot.

The kernel is a separate process started from a kernelspec written into a temporary directory, whose argv
is *this* interpreter (``sys.executable -m ipykernel_launcher``). The default lookup of the notebooks'
``python3`` kernelspec would search ``~/.local/share/jupyter`` first, where a user's "python3" may point at
another Python without Ray or this project; the private spec also registers nothing anywhere. The connection
file, IPython's profile dir and matplotlib's cache go to the temporary directory too, so a run writes
nothing to the home directory.

The kernel joins the Ray the ``ray_session`` fixture started (``RAY_ADDRESS``) instead of starting its own,
runs with cwd ``notebooks/`` and the repository root on ``PYTHONPATH`` (``benchmarks/`` is not installed),
and gets a test-only namespace for the quickstart's orchestrator.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TEAMS = ("coding-team", "research-team", "creative-team", "coding-debate")


@pytest.fixture(scope="module")
def namespace() -> str:
    return f"notebook-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def kernel_env(ray_session: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The kernel's environment: the session's Ray, the scripted model, no ORCHESTRA_* left by other tests."""
    home = tmp_path_factory.mktemp("kernel-home")
    # The Serve fixture exports ORCHESTRA_CONFIG & co. (its test config); the notebooks use the shipped one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_") and k != "MPLBACKEND"}
    env.update(
        RAY_ADDRESS=ray_session.get_runtime_context().gcs_address,
        RAY_USAGE_STATS_ENABLED="0",
        ORCHESTRA_LLM_PROVIDER="scripted",
        ORCHESTRA_NOTEBOOK_NAMESPACE=namespace,
        ORCHESTRA_NOTEBOOK_QUICK="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        IPYTHONDIR=str(home / "ipython"),
        MPLCONFIGDIR=str(home / "matplotlib"),
    )
    return env


def run_notebook(name: str, env: dict[str, str], tmp_path: Path) -> Any:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test interpreter)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    km = AsyncKernelManager(
        kernel_name="python3",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
        connection_file=str(tmp_path / "kernel-connection.json"),
    )
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, km=km, timeout=120, startup_timeout=60, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    # cleanup_kc: stop the kernel afterwards even though the manager is ours, not the client's.
    client.execute(env=env, cleanup_kc=True)
    return nb


def outputs(nb: Any) -> list[Any]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def text_of(nb: Any) -> str:
    parts = []
    for o in outputs(nb):
        if o.output_type == "stream" and o.name == "stdout":
            parts.append(o.text)
        elif "data" in o:
            parts.append(o.data.get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["01-quickstart.ipynb", "02-throughput.ipynb"])
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_quickstart_runs_every_team_streams_and_cleans_up(
    ray_session: Any, kernel_env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    nb = run_notebook("01-quickstart.ipynb", kernel_env, tmp_path)

    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = text_of(nb)
    assert f"namespace: {namespace}" in text
    for team in TEAMS:
        assert f"=== {team}:" in text  # ran once, with its turn and token counts
    assert "################ round 2 ################" in text  # the streamed debate, round by round
    assert "--- round 1 | coder-1 (debater) | scripted/" in text
    final = text.split("================ final answer ================", 1)[1]
    assert "SCORE:" in final and "quality score" in final
    assert "coding-debate/balanced, completed, 7 turns" in text  # the streamed debate's transcript
    assert "orchestrator-0" in text and "coding-debate  coder-3" in text  # h.actors()
    assert f"stopped the orchestrator this notebook started in namespace {namespace!r}" in text

    # The last cell killed the orchestrator it started (ray.kill is asynchronous: give it a moment).
    deadline = time.monotonic() + 15
    while True:
        try:
            ray_session.get_actor("orchestrator-0", namespace=namespace)
        except ValueError:
            break
        assert time.monotonic() < deadline, "the quickstart left its orchestrator running"
        time.sleep(0.2)


def test_throughput_notebook_runs_w1_and_plots(kernel_env: dict[str, str], tmp_path: Path) -> None:
    nb = run_notebook("02-throughput.ipynb", kernel_env, tmp_path)

    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = text_of(nb)
    assert "4 points in" in text  # orchestra and asyncio at C = 8 and 32
    rows = [line.split() for line in text.splitlines() if line.startswith(("orchestra ", "asyncio "))]
    assert sorted((r[0], int(r[2])) for r in rows) == [
        ("asyncio", 8),
        ("asyncio", 32),
        ("orchestra", 8),
        ("orchestra", 32),
    ]
    for row in rows:
        assert float(row[5]) > 0  # sessions/s
    pngs = [o for o in outputs(nb) if "data" in o and "image/png" in o.data]
    assert len(pngs) >= 3  # plot_w1's two PNGs and the inline chart
