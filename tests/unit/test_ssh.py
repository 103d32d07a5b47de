"""The SSH adapter's pure parts: capped streams, the pid line, the hosts file and grants."""

import json
from typing import Any

import pytest

from adapters.ssh import PID_MARK, Capped, _Run, granted, load_hosts
from core.errors import NotFound
from core.settings import SshSettings


def run() -> tuple[_Run, list[tuple[str, bytes]]]:
    seen: list[tuple[str, bytes]] = []
    return _Run(None, lambda name, data: seen.append((name, data)),  # type: ignore[arg-type]
                Capped(8), Capped(8)), seen


def test_the_pid_line_is_taken_off_stdout_even_split_across_reads() -> None:
    session, seen = run()
    session.stdout_chunk(PID_MARK.encode()[:5])
    session.stdout_chunk(PID_MARK.encode()[5:] + b"4242\nhel")
    session.stdout_chunk(b"lo\n")
    assert session.pid == 4242 and bytes(session.stdout.data) == b"hello\n"
    assert seen == [("stdout", b"hel"), ("stdout", b"lo\n")]


def test_without_the_mark_everything_is_output_and_there_is_no_pid() -> None:
    session, _ = run()
    session.stdout_chunk(b"Welcome!\nout")
    assert session.pid == 0 and bytes(session.stdout.data) == b"Welcome!"
    assert session.stdout.truncated


def test_a_stream_keeps_its_cap_and_says_it_was_cut() -> None:
    stream = Capped(5)
    assert stream.add(b"abc") == b"abc" and stream.add(b"defg") == b"de"
    assert stream.add(b"h") == b"" and stream.text() == "abcde" and stream.truncated


HOST: dict[str, Any] = {"name": "web-1", "address": "10.0.0.5", "user": "ops",
                        "key_file": "/k", "known_hosts": "/kh", "tenants": ["ten_a"]}


def test_hosts_come_from_the_file_and_the_variable_and_are_granted_per_tenant(
        tmp_path: Any) -> None:
    hosts_file = tmp_path / "hosts.json"
    hosts_file.write_text('[{"name": "lab", "address": "lab", "user": "u", "key_file": "/k", '
                          '"known_hosts": "/kh", "tenants": ["*"]}]')
    settings = SshSettings(hosts_file=str(hosts_file), hosts=json.dumps([HOST]))
    hosts = load_hosts(settings)
    assert sorted(hosts) == ["lab", "web-1"] and hosts["web-1"].port == 22
    assert granted(hosts, "web-1", "ten_a").address == "10.0.0.5"
    assert granted(hosts, "lab", "anyone").name == "lab"
    for name, tenant in (("web-1", "ten_b"), ("nope", "ten_a")):
        with pytest.raises(NotFound, match=f"SSH host '{name}' not found"):
            granted(hosts, name, tenant)
