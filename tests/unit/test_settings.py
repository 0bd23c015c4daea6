"""Every ORCHESTRA_* variable is a described field of one settings object, and the README lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestra import ConfigError, settings
from orchestra.settings import ENV_PREFIX, Settings, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_every_field_is_described() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_the_readme_lists_the_settings_as_they_are() -> None:
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_no_code_reads_an_orchestra_variable_but_the_settings() -> None:
    # environ.get("ORCHESTRA_..."), environ["ORCHESTRA_..."] not assigned, getenv("ORCHESTRA_...")
    reads = re.compile(
        r"environ\.get\(\s*[\"']ORCHESTRA_|environ\[[\"']ORCHESTRA_\w+[\"']\](?!\s*=)|getenv\(\s*[\"']ORCHESTRA_"
    )
    offending = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("orchestra", "actors")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line)
    ] + [
        f"serve_app.py:{n}"
        for n, line in enumerate((ROOT / "serve_app.py").read_text().splitlines(), 1)
        if reads.search(line)
    ]
    assert offending == []


def test_a_bad_value_names_the_variable_and_never_echoes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PREFIX + "SCRIPTED_LATENCY_S", "-1")
    with pytest.raises(ConfigError) as info:
        settings()
    assert info.value.details["field"] == "ORCHESTRA_SCRIPTED_LATENCY_S"
    monkeypatch.setenv(ENV_PREFIX + "SCRIPTED_LATENCY_S", "0.5")
    assert settings().scripted_latency_s == 0.5
