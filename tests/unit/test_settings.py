"""Settings as people write them, and the command's one-line answers when something is off."""

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import SECTIONS, Settings, env_name, get_settings

README = Path(__file__).parents[2] / "README.md"
ORCHESTRATOR = Path(sys.executable).parent / "orchestrator"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    sections = [info.annotation for info in Settings.model_fields.values()]
    assert sections == SECTIONS
    names = [env_name(s, field) for s in SECTIONS for field in s.model_fields]
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


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(("value", "networks"), [
    ("127.0.0.0/8", ["127.0.0.0/8"]),
    ("127.0.0.0/8, 10.0.0.0/8", ["127.0.0.0/8", "10.0.0.0/8"]),
    ('["127.0.0.1/32"]', ["127.0.0.1/32"]),
    ("", []),
], ids=["one-cidr", "comma-separated", "json", "empty"])
def test_list_settings_are_read_as_people_write_them(
        monkeypatch: pytest.MonkeyPatch, fresh_settings: None, value: str,
        networks: list[str]) -> None:
    # Given a list setting written as one value, a comma-separated list or JSON
    monkeypatch.setenv("CALLBACK_ALLOWED_NETWORKS", value)
    monkeypatch.setenv("CALLBACK_SCHEDULE", "5, 300")
    # When the settings are read
    settings = get_settings()
    # Then each is a list
    assert settings.callback.allowed_networks == networks
    assert settings.callback.schedule == [5.0, 300.0]


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CALLBACK_ALLOWED_NETWORKS", "nonsense", "'nonsense' does not appear to be an IPv4"),
    ("CALLBACK_ALLOWED_NETWORKS", "[oops", "not one value, comma-separated values or a JSON"),
    ("CALLBACK_SCHEDULE", "5,soon", "CALLBACK_SCHEDULE[1]='soon'"),
    ("API_PORT", "eighty", "valid integer"),
], ids=["not-a-cidr", "broken-json", "not-a-number", "not-an-int"])
def test_an_invalid_setting_is_one_line_naming_the_variable_and_the_form(
        monkeypatch: pytest.MonkeyPatch, fresh_settings: None, name: str, value: str,
        says: str) -> None:
    # Given an invalid setting
    monkeypatch.setenv(name, value)
    # When the settings are read
    with pytest.raises(ConfigError) as raised:
        get_settings()
    # Then one line names the variable, what is wrong and the expected form
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"invalid setting {name}")
    assert says in message and "Expected: " in message


def test_the_command_prints_an_invalid_setting_as_one_line(tmp_path: Path) -> None:
    # Given the orchestrator command with a setting written wrongly
    env = {"PATH": "/usr/bin:/bin", "CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8,oops",
           "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    # When it starts
    done = subprocess.run([str(ORCHESTRATOR), "migrate"], env=env, capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    # Then it exits 2 with one line on stderr, no traceback
    assert done.returncode == 2
    assert done.stderr.startswith("invalid setting CALLBACK_ALLOWED_NETWORKS='127.0.0.0/8,oops'")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_submit_without_a_reachable_api_says_where_it_looked(tmp_path: Path) -> None:
    # Given no API on a port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # When a job is submitted there
    done = subprocess.run([str(ORCHESTRATOR), "submit", "debug.echo", "--url",
                           f"http://127.0.0.1:{port}", "--api-key", "k"],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    # Then one line names the URL tried and how to start the stack; no traceback
    assert done.returncode == 1
    assert done.stderr.startswith(f"could not reach the API at http://127.0.0.1:{port}/ (")
    assert "make run" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
