"""What an SSH command may be: the peek allowlist, and the patterns that hold a command."""

import pytest

from core.settings import DANGEROUS_PATTERNS, PEEK_PATHS
from tasks.commands import Refused, dangerous, peek_command


@pytest.mark.parametrize(("command", "sent"), [
    ("uptime", "uptime"),
    ("df -h", "df -h"),
    ("free -m", "free -m"),
    ("ps aux", "ps aux"),
    ("ls -la /var/log", "ls -la /var/log"),
    ("cat /etc/os-release", "cat /etc/os-release"),
    ("tail -n 50 /var/log/syslog", "tail -n 50 /var/log/syslog"),
    ("journalctl --no-pager -n 20 -u nginx", "journalctl --no-pager -n 20 -u nginx"),
    ("systemctl status nginx", "systemctl status nginx"),
], ids=["uptime", "df", "free", "ps", "ls", "cat", "tail", "journalctl", "systemctl"])
def test_read_only_commands_pass_and_are_sent_as_their_words(command: str, sent: str) -> None:
    assert peek_command(command, PEEK_PATHS) == sent


@pytest.mark.parametrize(("command", "why"), [
    ("uptime; reboot", "metacharacters"),
    ("cat /etc/hostname | sh", "metacharacters"),
    ("ls `id`", "metacharacters"),
    ("ls $HOME", "metacharacters"),
    ("cat /var/log/*.log", "metacharacters"),
    ("ls 'a b'", "metacharacters"),
    ("uptime\nreboot", "metacharacters"),
    ("", "empty"),
    ("rm -rf /", "not a read-only command"),
    ("cat /etc/shadow", "not an allowed path"),
    ("cat /var/log/../../etc/shadow", "normalised path"),
    ("tail -f /var/log/syslog", "not an allowed option"),
    ("head -n lots /var/log/syslog", "needs a number"),
    ("cat", "name a file"),
    ("ls relative", "absolute path"),
    ("ls --color=always /", "not an allowed option of ls"),
    ("journalctl --no-pager -n 5 --vacuum-size=1", "not an allowed argument"),
    ("systemctl restart nginx", "only 'systemctl status'"),
    ("ps -o pid --forest", "not an allowed argument"),
], ids=["chain", "pipe", "backticks", "variable", "glob", "quotes", "newline", "empty", "rm",
        "shadow", "dotdot", "follow", "not-a-number", "no-file", "relative", "ls-option",
        "vacuum", "restart", "ps-option"])
def test_anything_else_is_refused_with_the_reason(command: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        peek_command(command, PEEK_PATHS)


@pytest.mark.parametrize(("command", "held"), [
    ("rm -rf /tmp/x", True), ("rm -r dir", True), ("rm --recursive d", True),
    ("rm file.txt", False), ("mkfs.ext4 /dev/sdb1", True),
    ("dd if=/dev/zero of=/dev/sda", True), ("shutdown -h now", True), ("reboot", True),
    ("chmod -R 777 /srv", True), ("chmod 644 f", False), ("iptables -F", True),
    ("kill -9 1234", True), ("kill 1234", False), ("echo x > /etc/passwd", True),
    ("echo x | tee -a /etc/hosts", True), ("cp evil /etc/cron.d/x", True),
    ("systemctl stop nginx", True), ("systemctl status nginx", False),
    ("ls -la /etc", False), ("cat /etc/hosts", False), ("echo add > /tmp/etc", False),
    (":(){ :|:& };:", True),
], ids=lambda value: str(value))
def test_dangerous_patterns(command: str, held: bool) -> None:
    assert bool(dangerous(command, DANGEROUS_PATTERNS)) is held


@pytest.mark.parametrize("command", [
    "cat /etc/hostname2", "cat /etc/hostname.bak", "tail /var/logs/secret",
    "head -n 5 /var/log2/syslog", "cat /proc/loadavg_x",
], ids=["hostname2", "hostname-bak", "logs", "log2", "loadavg-x"])
def test_a_sibling_of_an_allowed_path_is_refused(command: str) -> None:
    # Given the allowlist names the file /etc/hostname and the folder /var/log/
    # Then a path that only starts with the same letters is not inside either
    with pytest.raises(Refused, match="not an allowed path"):
        peek_command(command, PEEK_PATHS)


@pytest.mark.parametrize("paths", [["/etc/hostname", "/var/log"], ["/etc/hostname", "/var/log/"]],
                         ids=["folder-without-slash", "folder-with-slash"])
def test_a_sibling_is_refused_however_the_folder_is_written(paths: list[str]) -> None:
    for command in ("cat /etc/hostname2", "tail /var/logs/secret", "cat /var/log-old/x"):
        with pytest.raises(Refused, match="not an allowed path"):
            peek_command(command, paths)
    assert peek_command("cat /etc/hostname", paths) == "cat /etc/hostname"
