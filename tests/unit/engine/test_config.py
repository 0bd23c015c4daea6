from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import orchestra
import orchestra.providers
from orchestra import ConfigError, load_config


def test_shipped_config_defines_the_four_teams_and_three_modes(raw_config: dict[str, Any]) -> None:
    cfg = load_config(raw_config)
    assert set(cfg.teams) == {"coding-team", "research-team", "creative-team", "coding-debate"}
    for team in cfg.teams.values():
        assert set(team.modes) == set(orchestra.MODES)
    assert [cfg.deadline_for("coding-team", m) for m in orchestra.MODES] == [30, 120, 300]


def test_models_come_from_tiers_per_mode(raw_config: dict[str, Any]) -> None:
    raw = copy.deepcopy(raw_config)
    raw["model_tiers"]["openai"] = {"fast": "small-model", "standard": "mid-model", "best": "big-model"}
    cfg = load_config(raw)
    assert cfg.model_for("openai", "coding-debate", "lite", "coder") == "small-model"
    assert cfg.model_for("openai", "coding-debate", "quality", "judge") == "big-model"
    assert cfg.model_for("scripted", "coding-team", "balanced", "coder") == "scripted/standard"


@pytest.mark.parametrize(
    ("mutate", "field_fragment"),
    [
        (lambda c: c["teams"]["coding-team"]["flow"].update(worker="nobody"), "coding-team"),
        (lambda c: c["teams"]["coding-debate"].pop("judge"), "coding-debate"),
        (lambda c: c["teams"]["research-team"]["modes"].pop("quality"), "research-team"),
        (lambda c: c["modes"]["lite"].update(model_tier="huge"), "model_tiers"),
        (lambda c: c["teams"]["creative-team"].update(colour="blue"), "colour"),
        (lambda c: c["router"].update(default="no-such-team"), "router"),
        (lambda c: c["teams"]["coding-team"]["modes"]["lite"].update(rounds=0), "rounds"),
        (lambda c: c["teams"]["coding-debate"]["modes"]["lite"]["agents"].update(coder=99), "coding-debate"),
        (lambda c: c["providers"]["openai"].update(timeout_s=-1), "timeout_s"),
        (lambda c: c["runtime"].update(orchestrator_shards=0), "orchestrator_shards"),
    ],
)
def test_bad_config_fails_with_the_offending_field(
    raw_config: dict[str, Any], mutate: Any, field_fragment: str
) -> None:
    raw = copy.deepcopy(raw_config)
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    text = info.value.message + str(info.value.details)
    assert field_fragment in text
    assert info.value.details["field"]


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("teams: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_new_team_needs_yaml_only(raw_config: dict[str, Any]) -> None:
    raw = copy.deepcopy(raw_config)
    raw["teams"]["review-panel"] = {
        "description": "Two reviewers in a pipeline",
        "pattern": "pipeline",
        "flow": {"stages": ["drafter", "editor"]},
        "agents": {
            "drafter": {"role": "writer", "system_prompt": "Draft."},
            "editor": {"role": "critic", "system_prompt": "Edit and score."},
        },
        "modes": {"lite": {}, "balanced": {"agents": {"drafter": 2}}, "quality": {"agents": {"drafter": 3}}},
    }
    cfg = load_config(raw)
    assert cfg.teams["review-panel"].instances("quality", "drafter") == [
        "drafter-1",
        "drafter-2",
        "drafter-3",
    ]


def test_provider_env_override(monkeypatch: pytest.MonkeyPatch, raw_config: dict[str, Any]) -> None:
    cfg = load_config(raw_config)
    monkeypatch.setenv("ORCHESTRA_LLM_PROVIDER", "anthropic")
    assert cfg.resolved_provider() == "anthropic"
    monkeypatch.setenv("ORCHESTRA_LLM_PROVIDER", "gpt")
    with pytest.raises(ConfigError, match="ORCHESTRA_LLM_PROVIDER"):
        cfg.resolved_provider()
    monkeypatch.setenv("ORCHESTRA_LLM_PROVIDER", "auto")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert cfg.resolved_provider() == "scripted"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    assert cfg.resolved_provider() == "anthropic"


def test_selected_remote_provider_without_key_fails_at_start(
    monkeypatch: pytest.MonkeyPatch, raw_config: dict[str, Any]
) -> None:
    monkeypatch.setenv("ORCHESTRA_LLM_PROVIDER", "openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        orchestra.providers.make_provider(load_config(raw_config))


def test_scripted_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra.providers import ScriptedSettings

    monkeypatch.setenv("ORCHESTRA_SCRIPTED_LATENCY_S", "0.25")
    monkeypatch.setenv("ORCHESTRA_SCRIPTED_TOKENS_PER_S", "0")
    s = ScriptedSettings(latency_s=1.0, tokens_per_s=50).with_env_overrides()
    assert (s.latency_s, s.tokens_per_s) == (0.25, 0.0)
    monkeypatch.setenv("ORCHESTRA_SCRIPTED_LATENCY_S", "soon")
    with pytest.raises(ConfigError, match="ORCHESTRA_SCRIPTED_LATENCY_S"):
        ScriptedSettings().with_env_overrides()
    monkeypatch.setenv("ORCHESTRA_SCRIPTED_LATENCY_S", "-1")
    with pytest.raises(ConfigError):
        ScriptedSettings().with_env_overrides()
