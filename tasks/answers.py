"""What a step found, in plain words: the best results quoted, a command's status and first
lines, a tool's status. The rule-based answer is made of these, and a model's answer is given
them (and lists them) so it stays grounded in what ran.
"""

import json
from typing import Any

QUOTED = 3
QUOTE_CHARS = 160
LINES = 3


def plural(count: int, noun: str) -> str:
    """`1 note`, `2 notes`, `no notes`."""
    if count == 0:
        return f"no {noun}s"
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def quote(text: Any, limit: int = QUOTE_CHARS) -> str:
    """A text in quotes on one line, cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return f'"{flat if len(flat) <= limit else flat[:limit - 1] + "…"}"'


def _search(output: dict[str, Any]) -> str:
    results = output["results"]
    if not results:
        return "Found no notes"
    best = "; ".join(quote(r.get("text", "")) for r in results[:QUOTED])
    more = f" (and {len(results) - QUOTED} more)" if len(results) > QUOTED else ""
    return f"Found {plural(len(results), 'note')}: {best}{more}"


def _command(output: dict[str, Any]) -> str:
    where = f" on {output['host']}" if output.get("host") else ""
    if output.get("dry_run"):
        return f"Did not run {quote(output.get('command', ''))}{where}: a dry run"
    status = output.get("exit_status")
    said = f"exited with status {status}" if status is not None else "ended without a status"
    lines = [line for line in str(output.get("stdout") or output.get("stderr") or "")
             .splitlines() if line.strip()][:LINES]
    shown = f"; first lines: {quote(' / '.join(lines), 300)}" if lines else "; no output"
    return f"The command {quote(output.get('command', ''), 80)}{where} {said}{shown}"


def _written(output: dict[str, Any]) -> str:
    if isinstance(output.get("items"), list):
        return f"Remembered {plural(len(output['items']), 'note')}"
    return "Remembered it" if output.get("status") == "stored" else "Wrote to memory"


def found(intent: str, output: Any) -> str:
    """One sentence (no final stop) saying what a step did and found."""
    if not isinstance(output, dict):
        return f"{intent}: {quote(output)}" if output not in (None, "") else f"{intent}: done"
    results = output.get("results")
    if isinstance(results, list) and all(isinstance(r, dict) for r in results):
        return _search(output)
    if "exit_status" in output or output.get("dry_run"):
        return _command(output)
    if intent.startswith("memory.write"):
        return _written(output)
    if "deleted" in output:
        return f"Deleted {plural(int(output['deleted']), 'note')}"
    if "final_message" in output:
        return f"{intent} answered {quote(output.get('text') or output['final_message'])}"
    if "status" in output:
        return f"{intent} answered with status {output['status']}"
    return f"{intent}: {quote(json.dumps(output, default=str, ensure_ascii=False))}"
