"""`ssh.exec.peek` and `ssh.exec`: commands on the configured hosts, safe by default.

`ssh.exec.peek` runs only read-only commands from an allowlist (refused before connecting).
`ssh.exec` runs anything, but is a dry run unless `confirm_dangerous` is true, and a confirmed
command matching a dangerous pattern is held until a person approves that exact command on
that host. Output lines stream as `step_output` events; every executed command is recorded as
a `command_executed` audit event (tenant, key id, host, command, exit status, duration).
"""

import functools
import logging
import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from adapters.ssh import CommandTimeout, HostSpec, Result, granted, load_hosts
from core.models import KEY_ID, Effect, EventType, Job, PoolName
from core.settings import SshSettings
from tasks.commands import dangerous, peek_argv, peek_command
from tasks.engine.context import Cancelled, Hold, StepContext
from tasks.engine.registry import Intent, ResourceProvider

audit_log = logging.getLogger("orchestrator.audit")
FLUSH_SECONDS = 0.5
FLUSH_BYTES = 64 * 1024
DRY_RUN_NOTE = "Set confirm_dangerous=true"
PEEK_PATHS = "peek_paths"


class PeekInputs(BaseModel):
    """A read-only command on a host."""

    host: str = Field(min_length=1, max_length=100, description="A configured SSH host.")
    command: str = Field(min_length=1, max_length=1000, description=(
        "A read-only command (uptime, df, free, ps, ls, cat/head/tail of allowed paths, "
        "journalctl --no-pager -n N, systemctl status, …) without shell metacharacters."))
    timeout: float | None = Field(None, gt=0, le=3600, description=(
        "Seconds before the command is killed (default SSH_COMMAND_TIMEOUT)."))

    @field_validator("command")
    @classmethod
    def _read_only(cls, command: str, info: ValidationInfo) -> str:
        # The allowed paths are the process's settings, handed in as the validation context
        # by the intent (see `ssh_intents`); without them nothing is read-only.
        paths = (info.context or {}).get(PEEK_PATHS)
        if paths is None:
            raise ValueError("ssh.exec.peek inputs are checked only with the allowed paths")
        peek_argv(command, paths)
        return command


class ExecInputs(BaseModel):
    """Any command on a host: a dry run unless confirmed; dangerous ones wait for approval."""

    host: str = Field(min_length=1, max_length=100, description="A configured SSH host.")
    command: str = Field(min_length=1, max_length=4096, description="The shell command.")
    confirm_dangerous: bool = Field(False, description=(
        "Run it (false: a dry run that only says what would run). A command matching "
        "SSH_DANGEROUS_PATTERNS is then held until approved with its token."))
    timeout: float | None = Field(None, gt=0, le=3600, description=(
        "Seconds before the command is killed (default SSH_COMMAND_TIMEOUT)."))


def check_host(hosts: dict[str, HostSpec], inputs: PeekInputs | ExecInputs,
               tenant_id: str) -> None:
    """NotFound unless the host is configured and granted to the tenant."""
    granted(hosts, inputs.host, tenant_id)


def hold_if_dangerous(patterns: list[str], inputs: ExecInputs) -> Hold | None:
    """A confirmed command matching a dangerous pattern waits for a person."""
    matches = dangerous(inputs.command, patterns)
    if not inputs.confirm_dangerous or not matches:
        return None
    return Hold(f"dangerous command on SSH host {inputs.host}: {inputs.command!r} matches "
                f"{matches}")


def ssh_intents(settings: SshSettings) -> list[Intent]:
    """`ssh.exec.peek` and `ssh.exec` under these settings (hosts, paths, patterns)."""
    hosts = load_hosts(settings)
    access = functools.partial(check_host, hosts)
    return [
        Intent("ssh.exec.peek", PoolName.tools, "agent", PeekInputs,
               "Run a read-only command (an allowlist, no shell metacharacters) on an SSH host "
               "granted to the tenant; returns stdout, stderr (capped) and the exit status.",
               peek, access=access, context={PEEK_PATHS: settings.peek_paths},
               effect=Effect.read),
        Intent("ssh.exec", PoolName.tools, "agent", ExecInputs,
               "Run a command on an SSH host granted to the tenant: a dry run unless "
               "confirm_dangerous is true; a dangerous command is held until approved.",
               execute, dangerous=True, destructive=True, access=access,
               approval=functools.partial(hold_if_dangerous, settings.dangerous_patterns)),
    ]


class SshProvider(ResourceProvider):
    """The SSH intents, built from this process's settings once bound."""

    prefix = "ssh."

    def __init__(self) -> None:
        self._intents: list[Intent] | None = None

    def intents(self, tenant_id: str | None) -> Iterable[Intent]:
        if self._intents is None:
            self._intents = ssh_intents(self.resources.settings.ssh)
        return self._intents


class OutputLines:
    """Batches a command's output into `step_output` events: whole lines, per stream."""

    def __init__(self, step: StepContext) -> None:
        self.step = step
        self.partial = {"stdout": b"", "stderr": b""}
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.size = 0
        self.flushed = time.monotonic()

    def add(self, stream: str, chunk: bytes) -> None:
        *whole, self.partial[stream] = (self.partial[stream] + chunk).split(b"\n")
        self.lines[stream] += [line.decode("utf-8", errors="replace") for line in whole]
        self.size += len(chunk)
        if self.size >= FLUSH_BYTES or time.monotonic() - self.flushed >= FLUSH_SECONDS:
            self.flush()

    def flush(self, last: bool = False) -> None:
        for stream, lines in self.lines.items():
            tail = self.partial[stream]
            if last and tail:
                lines.append(tail.decode("utf-8", errors="replace"))
                self.partial[stream] = b""
            if lines:
                self.step.emit(EventType.step_output, {"index": self.step.index, "stream": stream,
                                               "lines": lines})
        self.lines = {"stdout": [], "stderr": []}
        self.size, self.flushed = 0, time.monotonic()


def _key_id(step: StepContext) -> str | None:
    with step.resources.db.read() as session:
        job = session.get(Job, step.job_id)
        return job.context.get(KEY_ID) if job is not None else None


def _audit(step: StepContext, host: HostSpec, command: str, result: Result) -> None:
    record = {"index": step.index, "tenant_id": step.tenant_id, "key_id": _key_id(step),
              "host": host.name, "command": command, "exit_status": result.exit_status,
              "duration_ms": result.duration_ms, "killed": result.timed_out}
    audit_log.info("ssh command: %s", record)
    step.emit(EventType.command_executed, record)


def _run(step: StepContext, host_name: str, command: str, timeout: float | None) -> Any:
    rt = step.resources
    host = rt.ssh.host(host_name, step.tenant_id)
    deadline = min(timeout or rt.settings.ssh.command_timeout, max(step.remaining(), 0.1))
    lines = OutputLines(step)
    try:
        result = rt.ssh.run(host, command, timeout=deadline, sink=lines.add, stop=step.cancelled)
    finally:
        lines.flush(last=True)
    _audit(step, host, command, result)
    if result.timed_out:
        if step.cancelled():
            raise Cancelled()
        raise CommandTimeout(f"the command did not finish within {deadline:g}s on SSH host "
                             f"{host.name} and was killed")
    return {"host": host.name, "command": command, "exit_status": result.exit_status,
            "stdout": result.stdout.text(), "stderr": result.stderr.text(),
            "stdout_truncated": result.stdout.truncated,
            "stderr_truncated": result.stderr.truncated, "duration_ms": result.duration_ms}


def peek(step: StepContext) -> Any:
    """Run a read-only command, re-quoted from its checked words."""
    assert isinstance(step.inputs, PeekInputs)
    command = peek_command(step.inputs.command, step.resources.settings.ssh.peek_paths)
    return _run(step, step.inputs.host, command, step.inputs.timeout)


def execute(step: StepContext) -> Any:
    """Run the command once confirmed (and approved, if dangerous); otherwise a dry run."""
    assert isinstance(step.inputs, ExecInputs)
    inputs = step.inputs
    if not inputs.confirm_dangerous:
        matches = dangerous(inputs.command, step.resources.settings.ssh.dangerous_patterns)
        return {"dry_run": True, "command": inputs.command, "host": inputs.host,
                "note": DRY_RUN_NOTE, "dangerous": bool(matches), "matches": matches}
    return _run(step, inputs.host, inputs.command, inputs.timeout)
