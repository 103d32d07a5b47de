"""What an SSH command may be: the read-only allowlist of `ssh.exec.peek`, and the patterns of
dangerous commands that `ssh.exec` holds for approval.

A peek command is parsed with `shlex` and refused before any connection when it holds a shell
metacharacter (no pipes, redirects, substitutions, globs, chaining) or is not on the list; the
command run is then re-quoted from its words, so the remote shell sees only plain arguments.
"""

import posixpath
import re
import shlex
from collections.abc import Callable, Sequence

METACHARACTERS = frozenset(";&|<>$`\\(){}*?[]!~#\n\r\t\"'")
NUMBER = re.compile(r"^[0-9]{1,6}$")
UNIT = re.compile(r"^[A-Za-z0-9@._:-]{1,200}$")
Check = Callable[[list[str], Sequence[str]], str | None]


def _options_only(allowed: set[str]) -> Check:
    """A command taking only these options (no operands)."""
    def check(args: list[str], _: Sequence[str]) -> str | None:
        bad = next((arg for arg in args if arg not in allowed), None)
        return bad and f"'{bad}' is not an allowed argument (allowed: {sorted(allowed)})"
    return check


def _path_problem(path: str, paths: Sequence[str]) -> str | None:
    normal = posixpath.normpath(path)
    if not path.startswith("/") or normal != path.rstrip("/") or ".." in path.split("/"):
        return f"'{path}' must be an absolute, normalised path"
    if not any(normal == p.rstrip("/") or (p.endswith("/") and normal.startswith(p))
               for p in paths):
        return f"'{path}' is not an allowed path (SSH_PEEK_PATHS: {list(paths)})"
    return None


def _files(options: set[str], numeric: set[str]) -> Check:
    """cat / head / tail: allowed options (those in `numeric` take a number), allowed paths."""
    def check(args: list[str], paths: Sequence[str]) -> str | None:
        files, rest = [], iter(args)
        for arg in rest:
            if arg in numeric:
                value = next(rest, "")
                if not NUMBER.match(value):
                    return f"'{arg}' needs a number, not '{value}'"
            elif arg.startswith("-"):
                if arg not in options:
                    return f"'{arg}' is not an allowed option (allowed: {sorted(options)})"
            else:
                files.append(arg)
        if not files:
            return "name a file to read"
        return next(filter(None, (_path_problem(f, paths) for f in files)), None)
    return check


def _ls(args: list[str], _: Sequence[str]) -> str | None:
    for arg in args:
        if arg.startswith("-") and not re.fullmatch(r"-[lahtrS1d]+", arg):
            return f"'{arg}' is not an allowed option of ls (letters from -lahtrS1d)"
        if not arg.startswith("-") and not arg.startswith("/"):
            return f"'{arg}' must be an absolute path"
    return None


def _journalctl(args: list[str], _: Sequence[str]) -> str | None:
    if "--no-pager" not in args or "-n" not in args:
        return "journalctl needs --no-pager and -n N"
    rest = iter(args)
    for arg in rest:
        if arg in ("-n", "-u"):
            value = next(rest, "")
            if not (NUMBER if arg == "-n" else UNIT).match(value):
                return f"'{arg}' needs {'a number' if arg == '-n' else 'a unit name'}"
        elif arg != "--no-pager":
            return f"'{arg}' is not an allowed argument (allowed: --no-pager, -n N, -u UNIT)"
    return None


def _systemctl(args: list[str], _: Sequence[str]) -> str | None:
    if not args or args[0] != "status":
        return "only 'systemctl status' is allowed"
    bad = next((a for a in args[1:] if a != "--no-pager" and not UNIT.match(a)), None)
    return bad and f"'{bad}' is not a unit name"


PEEK: dict[str, Check] = {
    "uptime": _options_only({"-p", "-s"}),
    "df": _options_only({"-h", "-i", "-T", "-hT", "-P"}),
    "free": _options_only({"-b", "-k", "-m", "-g", "-h", "-w", "-t"}),
    "ps": _options_only({"aux", "-ef", "-e", "-f", "-A", "axu"}),
    "uname": _options_only({"-a", "-r", "-s", "-m", "-n"}),
    "hostname": _options_only(set()),
    "whoami": _options_only(set()),
    "id": _options_only(set()),
    "date": _options_only({"-u", "-R", "-I"}),
    "w": _options_only({"-h"}),
    "who": _options_only({"-b", "-a"}),
    "ls": _ls,
    "cat": _files(set(), set()),
    "head": _files(set(), {"-n", "-c"}),
    "tail": _files(set(), {"-n", "-c"}),
    "journalctl": _journalctl,
    "systemctl": _systemctl,
}


class Refused(ValueError):
    """Raised when a command is not allowed; the message says why."""


def peek_argv(command: str, paths: Sequence[str]) -> list[str]:
    """The words of a read-only command; Refused (with the reason) for anything else."""
    if bad := sorted(METACHARACTERS.intersection(command)):
        raise Refused(f"shell metacharacters are not allowed in a peek command: {bad} (no "
                      "pipes, redirects, substitutions, globs, quotes or chaining)")
    argv = shlex.split(command)
    if not argv:
        raise Refused("the command is empty")
    check = PEEK.get(argv[0])
    if check is None:
        raise Refused(f"'{argv[0]}' is not a read-only command ssh.exec.peek runs (allowed: "
                      f"{sorted(PEEK)}); use ssh.exec")
    if reason := check(argv[1:], paths):
        raise Refused(f"{argv[0]}: {reason}")
    return argv


def peek_command(command: str, paths: Sequence[str]) -> str:
    """The command to send: its checked words, quoted for the remote shell."""
    return shlex.join(peek_argv(command, paths))


def dangerous(command: str, patterns: Sequence[str]) -> list[str]:
    """The dangerous patterns `command` matches (none: it runs once confirmed)."""
    return [pattern for pattern in patterns if re.search(pattern, command)]
