"""The SDK is a client of its own: it never imports the server (or Ray), its public names are exported
and documented, and ``Client`` and ``AsyncClient`` share their code through the base, not by copy."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import ai_orchestra
from ai_orchestra import _client

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "sdk" / "python" / "ai_orchestra"
SERVER = ("orchestra", "actors", "serve_app", "ray")


def _absolute_imports(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def test_no_module_of_the_sdk_imports_the_server() -> None:
    offending = [
        f"{path.name} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        for name in _absolute_imports(node)
        if name.split(".")[0] in SERVER
    ]
    assert offending == []


def test_import_ai_orchestra_loads_no_server_module() -> None:
    code = f"import sys, ai_orchestra\nprint(' '.join(m for m in {SERVER!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert out.stdout.strip() == ""


def test_the_public_names_are_all_exported_and_documented() -> None:
    public = {name for name in vars(ai_orchestra) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(ai_orchestra, name))}
    assert set(ai_orchestra.__all__) - {"__version__"} == public - modules
    undocumented = [
        name
        for name in ai_orchestra.__all__
        if (inspect.isclass(obj := getattr(ai_orchestra, name)) or inspect.isfunction(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert undocumented == []
    for cls in (ai_orchestra.Client, ai_orchestra.AsyncClient, ai_orchestra.ChatStream):
        methods = [
            f"{cls.__name__}.{name}"
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and not (member.__doc__ or "").strip()
        ]
        assert methods == []
    assert (PACKAGE / "py.typed").exists()


def _class_lines(tree: ast.Module, name: str, source: list[str]) -> list[str]:
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    assert node.end_lineno is not None
    return [line.strip() for line in source[node.lineno : node.end_lineno] if line.strip()]


def test_client_and_async_client_share_no_block_of_six_lines() -> None:
    source = Path(inspect.getfile(_client)).read_text()
    tree = ast.parse(source)
    sync = _class_lines(tree, "Client", source.splitlines())
    blocks = {tuple(sync[i : i + 6]) for i in range(len(sync) - 5)}
    asynchronous = _class_lines(tree, "AsyncClient", source.splitlines())
    windows = [asynchronous[i : i + 6] for i in range(len(asynchronous) - 5)]
    shared = [window for window in windows if tuple(window) in blocks]
    assert shared == []
