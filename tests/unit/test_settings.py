"""The README's configuration table names every setting the code reads."""

from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from core.settings import Settings

README = Path(__file__).parents[2] / "README.md"


def env_names(section: type[BaseSettings]) -> list[str]:
    prefix = str(section.model_config.get("env_prefix", ""))
    names = []
    for name, info in section.model_fields.items():
        alias = info.validation_alias
        first = alias.choices[0] if isinstance(alias, AliasChoices) else None
        names.append(str(first) if first else f"{prefix}{name}".upper())
    return names


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    sections = [info.annotation for info in Settings.model_fields.values()]
    names = [n for s in sections if isinstance(s, type) for n in env_names(s)]
    assert {"REDIS_URL", "DATABASE_URL", "ORCHESTRATOR_LOST_AFTER"} <= set(names)
    assert [n for n in names if f"| `{n}` |" not in text] == []


def test_time_limits_must_stay_below_the_visibility_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT", "600")
    with pytest.raises(ValueError, match="POOL_SOFT_TIME_LIMIT .* BROKER_VISIBILITY_TIMEOUT"):
        Settings()
    monkeypatch.setenv("POOL_SOFT_TIME_LIMIT", "500")
    monkeypatch.setenv("POOL_TIME_LIMIT", "550")
    assert Settings().pool.time_limit == 550
