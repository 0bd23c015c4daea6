"""``npm install`` of the packed JavaScript SDK into an empty project, away from this checkout, works.

``npm pack`` builds the tarball npm would publish; an empty project in a temporary directory installs it
(its dependency ``ws`` comes from the npm registry, through npm's cache) and imports the package by name:
the client, every error class and the type declarations are there, and nothing of the checkout is used.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.packaging._process import checked
from tests.packaging._process import run as run_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "js"
ERRORS = [
    "OrchestraError",
    "ValidationError",
    "AuthenticationError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "InternalError",
    "ServiceUnavailableError",
    "TimeoutError",
    "CancelledError",
    "ConnectionError",
    "StreamInterruptedError",
]

PROBE = """
import * as sdk from '@ai-orchestra/sdk';
import { AIOrchestra, OrchestraError, ConnectionError } from '@ai-orchestra/sdk';
import { createRequire } from 'node:module';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const errors = %(errors)s;
const missing = errors.filter((name) => typeof sdk[name] !== 'function');
if (missing.length) throw new Error(`missing error classes: ${missing}`);
for (const name of errors) {
  if (name !== 'OrchestraError' && !(new sdk[name]('x') instanceof OrchestraError)) {
    throw new Error(`${name} is not an OrchestraError`);
  }
}
// health() and streamChat() of a closed port are typed errors (the stream loads ws to find out)
const server = net.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
await new Promise((resolve) => server.close(resolve));
const client = new AIOrchestra({ apiKey: 'k', baseUrl: `http://127.0.0.1:${port}`, maxRetries: 0 });
const error = await client.health().catch((e) => e);
if (!(error instanceof ConnectionError && /ECONNREFUSED/.test(error.message))) {
  throw new Error(`health of a closed port: ${error}`);
}
const stream = client.streamChat({ message: 'x', maxRetries: 0 });
const wsError = await stream.catch((e) => e);
if (!(wsError instanceof ConnectionError)) throw new Error(`stream to a closed port: ${wsError}`);
console.log(JSON.stringify({
  exports: Object.keys(sdk).sort(),
  main: fileURLToPath(import.meta.resolve('@ai-orchestra/sdk')),
  ws: createRequire(new URL('node_modules/@ai-orchestra/sdk/', import.meta.url)).resolve('ws'),
  version: sdk.VERSION,
}));
"""


def run(argv: Sequence[str | os.PathLike[str]], *, cwd: Path, timeout: float) -> str:
    """Run ``argv`` to the end in its own process group (killed afterwards); its stdout, or fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "NODE_"))}
    return checked(run_process(argv, cwd=cwd, env=env, timeout=timeout)).stdout


@pytest.fixture(scope="module")
def npm() -> str:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are not installed: the JavaScript SDK needs Node.js >= 20")
    return npm


def test_npm_install_of_the_packed_sdk_into_an_empty_project(npm: str, tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(ROOT)
    dist = tmp_path / "dist"
    dist.mkdir()
    packed = json.loads(run([npm, "pack", "--json", "--pack-destination", dist], cwd=SDK, timeout=120))
    (tarball,) = dist.glob("ai-orchestra-sdk-*.tgz")
    assert packed[0]["filename"] == tarball.name

    with tarfile.open(tarball) as tar:
        files = sorted(n.removeprefix("package/") for n in tar.getnames())
    assert "package.json" in files and "README.md" in files
    assert "src/index.js" in files and "src/index.d.ts" in files
    assert not [f for f in files if f.startswith(("test/", "node_modules/")) or f.endswith(".tgz")], files

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "probe", "private": True, "type": "module"}))
    run([npm, "install", "--no-audit", "--no-fund", tarball], cwd=app, timeout=300)
    installed = app / "node_modules" / "@ai-orchestra" / "sdk"
    assert installed.is_dir() and not installed.is_symlink()
    manifest = json.loads((installed / "package.json").read_text())
    assert manifest["type"] == "module" and manifest["engines"]["node"] == ">=20"
    assert (installed / manifest["types"]).is_file()

    (app / "probe.mjs").write_text(PROBE % {"errors": json.dumps(ERRORS)})
    found = json.loads(run(["node", "probe.mjs"], cwd=app, timeout=60).splitlines()[-1])
    assert {"AIOrchestra", "ChatStream", *ERRORS} <= set(found["exports"])
    assert found["version"] == manifest["version"]
    for path in (found["main"], found["ws"]):
        assert Path(path).resolve().is_relative_to(app.resolve()), path
        assert not Path(path).resolve().is_relative_to(ROOT), path
