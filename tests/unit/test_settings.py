"""The README's configuration table names every setting the code reads."""

from pathlib import Path

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
