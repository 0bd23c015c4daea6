"""The playground end to end: Debian's headless Chromium (selenium, /usr/bin/chromedriver) against a live
``orchestra serve`` started here, with a scripted model slow enough to watch (a balanced debate takes a few
seconds, a quality one longer). Screenshots land in tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from orchestra.cli._embedded import free_port
from tests.integration.test_cli import _serve, _stop, _wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Without the background-networking flags Chromium's own connections are refused on a closed network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
]
# 0.3 s to the first token, then 40 tokens/s: a 48-token turn takes ~1.5 s, a balanced debate ~5 s.
SLOW_MODEL = {"ORCHESTRA_SCRIPTED_LATENCY_S": "0.3", "ORCHESTRA_SCRIPTED_TOKENS_PER_S": "40"}

T = TypeVar("T")

# The page's state in one call: every lane (agent, role, characters streamed), the answer, the badge.
PAGE_STATE = """
return {
  lanes: [...document.querySelectorAll('.lane')].map((l) => ({
    agent: l.dataset.agent, role: l.dataset.role,
    rounds: [...l.querySelectorAll('.turn')].map((t) => t.dataset.round),
    chars: [...l.querySelectorAll('.text')].reduce((n, t) => n + t.textContent.length, 0),
  })),
  answerShown: !document.getElementById('answer').hidden,
  runState: document.getElementById('run-state').textContent,
  error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
};
"""


@dataclass(frozen=True)
class Server:
    url: str
    key: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("needs Debian's chromium and chromium-driver (./dev test installs them)")
    workdir = tmp_path_factory.mktemp("serve")
    port = free_port()
    # This checkout's code in the server and its Ray workers, whichever checkout the venv installed.
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = _serve(workdir, port, {**SLOW_MODEL, "PYTHONPATH": pythonpath})
    try:
        output = _wait_ready(proc)
        url = f"http://127.0.0.1:{port}"
        key = (workdir / ".orchestra" / "dev-key").read_text().strip()
        # The printed link carries the key in the fragment only (never sent to the server).
        assert f"{url}/playground#key={key}" in output, output[-2000:]
        yield Server(url, key)
    finally:
        _stop(proc, port)


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        viewport(driver, 1280, 800)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def viewport(driver: WebDriver, width: int, height: int) -> None:
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def page(driver: WebDriver) -> dict[str, Any]:
    state: dict[str, Any] = driver.execute_script(PAGE_STATE)
    return state


def open_connected(driver: WebDriver, server: Server) -> None:
    """The link `orchestra serve` prints: the page takes the key from the fragment, then clears it."""
    driver.get(f"{server.url}/playground")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server.url}/playground#key={server.key}")
    wait_for(lambda: driver.find_element(By.ID, "conn-status").text == "Connected", 30, "connected")
    assert "#" not in driver.current_url and server.key not in driver.current_url
    stored = driver.execute_script("return sessionStorage.getItem('orchestra.playground.key')")
    assert stored == server.key


def start_run(driver: WebDriver, team: str, mode: str, message: str) -> None:
    for attempt in range(3):
        try:
            # The page fills the team and mode lists when the server's team list arrives.
            Select(driver.find_element(By.ID, "team")).select_by_value(team)
            Select(driver.find_element(By.ID, "mode")).select_by_value(mode)
            break
        except StaleElementReferenceException:
            if attempt == 2:
                raise
            time.sleep(0.2)
    box = driver.find_element(By.ID, "message")
    box.clear()
    box.send_keys(message)
    driver.find_element(By.ID, "send").click()


def test_a_bad_key_shows_an_error(browser: WebDriver, server: Server) -> None:
    browser.get(f"{server.url}/playground")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    key = browser.find_element(By.ID, "api-key")
    key.send_keys("orch_not_a_real_key")
    browser.find_element(By.ID, "connect").click()
    error = wait_for(lambda: page(browser)["error"], 30, "the error message")
    assert "API key was refused" in error
    assert browser.find_element(By.ID, "conn-status").text == "Not connected"
    assert not browser.find_element(By.ID, "send").is_enabled()
    screenshot(browser, "playground-bad-key")


def test_a_balanced_debate_streams_into_one_lane_per_agent_then_the_answer(
    browser: WebDriver, server: Server
) -> None:
    open_connected(browser, server)
    start_run(browser, "coding-debate", "balanced", "Compare approaches to merging overlapping intervals")
    seen_running: list[dict[str, Any]] = []

    def finished() -> bool:
        state = page(browser)
        if not state["answerShown"]:
            seen_running.append(state)
            if (
                len([lane for lane in state["lanes"] if lane["chars"]]) >= 3
                and not ARTIFACTS.joinpath("playground-debate-running.png").exists()
            ):
                screenshot(browser, "playground-debate-running")
        return bool(state["answerShown"])

    ARTIFACTS.joinpath("playground-debate-running.png").unlink(missing_ok=True)
    wait_for(finished, 90, "the final answer")
    # Tokens arrived in the lanes while the run was in progress, before the final answer: the debaters'
    # first, the judge's last, each still running.
    streaming = [s for s in seen_running if s["runState"] == "running"]
    filled = {lane["agent"] for s in streaming for lane in s["lanes"] if lane["chars"] > 0}
    assert {"coder-1", "coder-2", "coder-3", "judge"} <= filled, filled
    growing = [
        next(lane["chars"] for lane in s["lanes"] if lane["agent"] == "coder-1")
        for s in streaming
        if any(lane["agent"] == "coder-1" for lane in s["lanes"])
    ]
    assert len(set(growing)) >= 3, growing  # coder-1's lane filled over several looks, not at once
    # balanced coding-debate (configs/swarms.yaml): 3 debaters for 2 rounds, then the judge, last.
    done = page(browser)
    assert [lane["agent"] for lane in done["lanes"]] == ["coder-1", "coder-2", "coder-3", "judge"]
    assert [lane["rounds"] for lane in done["lanes"][:3]] == [["1", "2"]] * 3
    assert done["lanes"][3]["role"] == "judge" and len(done["lanes"][3]["rounds"]) == 1
    assert done["runState"] == "done" and done["error"] == ""
    assert re.fullmatch(r"[01]\.\d\d", browser.find_element(By.ID, "score").text)
    assert re.fullmatch(r"\d+\.\d\d s", browser.find_element(By.ID, "exec-time").text)
    assert browser.find_element(By.ID, "response").text.strip()
    bars = browser.find_elements(By.CSS_SELECTOR, "#token-chart li")
    assert [b.text.split("\n")[0] for b in bars] == ["coder-1", "coder-2", "coder-3", "judge"]
    assert wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#history li"), 10, "the history")
    screenshot(browser, "playground-debate-done")


def test_cancel_stops_a_quality_run_and_the_session_goes_on(browser: WebDriver, server: Server) -> None:
    open_connected(browser, server)
    start_run(browser, "coding-debate", "quality", "Debate the best way to merge intervals")
    wait_for(lambda: any(lane["chars"] for lane in page(browser)["lanes"]), 30, "the first tokens")
    cancel = browser.find_element(By.ID, "cancel")
    assert cancel.is_enabled()
    cancel.click()
    error = wait_for(lambda: page(browser)["error"], 30, "the cancelled message")
    assert error.startswith("Cancelled"), error
    state = page(browser)
    assert state["runState"] == "cancelled" and not state["answerShown"]
    assert "judge" not in {lane["agent"] for lane in state["lanes"]}  # stopped before the verdict
    chars = sum(lane["chars"] for lane in state["lanes"])
    time.sleep(2.0)  # nothing more streams in after the cancel
    assert sum(lane["chars"] for lane in page(browser)["lanes"]) == chars
    screenshot(browser, "playground-cancelled")
    # The session goes on: the next message on it runs to its answer.
    start_run(browser, "creative-team", "lite", "A haiku about actors")
    wait_for(lambda: page(browser)["answerShown"], 60, "the next answer")
    assert page(browser)["error"] == ""


def test_narrow_window_and_keyboard(browser: WebDriver, server: Server) -> None:
    open_connected(browser, server)
    try:
        viewport(browser, 420, 800)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 420, f"the page scrolls sideways at 420 px ({width} px wide)"
        screenshot(browser, "playground-narrow")
    finally:
        viewport(browser, 1280, 800)
    # Every control has a label, every action is a real button.
    unlabeled = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id)"
    )
    assert unlabeled == []
    assert not browser.find_elements(By.CSS_SELECTOR, "[onclick]:not(button)")
    # Keyboard: from the key field, Tab reaches Connect and then Forget key.
    browser.find_element(By.ID, "api-key").click()
    order = browser.execute_script("return [...document.querySelectorAll('button')].map((b) => b.id)")
    assert order[:2] == ["connect", "forget-key"]
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "connect"
