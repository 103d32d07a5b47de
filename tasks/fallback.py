"""The rule-based planner: what a prompt becomes when no model is configured or reachable.

It handles the common cases by keywords and says plainly, in the answer, that it was used.
"""

import re
from dataclasses import dataclass, field

from tasks.planning import PlannedStep

SEARCH = re.compile(r"\b(?:search(?:\s+for)?|find|recall|look\s+up)\b\s*(?:about\s+|for\s+)?"
                    r"(?:(?:in\s+)?(?:my\s+)?(?:notes|memory)\s*(?:for\s+|about\s+)?:?\s*)?",
                    re.IGNORECASE)
QUESTION = re.compile(r"^\s*(?:when|where|what|which|who|whom|whose|why|how|is|are|do|does|did)"
                      r"\b.*\?\s*$", re.IGNORECASE | re.DOTALL)
REMEMBER = re.compile(r"\b(?:remember|note(?:\s+down)?|memori[sz]e)\b\s*(?:that\s+)?:?\s*",
                      re.IGNORECASE)
RUN_ON = re.compile(r"\b(?:run|check|execute)\s+(?P<command>.+?)\s+on\s+(?P<host>[\w.:-]+)"
                    r"\s*[.!?]*\s*$", re.IGNORECASE)


@dataclass
class FallbackPlan:
    """Steps chosen by keyword, and what the answer must say about what could not be done."""

    steps: list[PlannedStep] = field(default_factory=list)
    note: str = ""


def _rest(prompt: str, match: re.Match[str]) -> str:
    return prompt[match.end():].strip(" .?!") or prompt.strip()


def _unavailable(what: str, intent: str) -> FallbackPlan:
    return FallbackPlan(note=f"{what} is not available here (no `{intent}` intent), so it was "
                             "not done.")


def plan(prompt: str, available: set[str], namespace: str | None) -> FallbackPlan:
    """The steps for `prompt` by keyword: search, remember, run on a host, or none."""
    scope = {"namespace": namespace} if namespace else {}
    if (run := RUN_ON.search(prompt)) is not None:
        if "ssh.exec.peek" not in available:
            return _unavailable("Running commands on hosts", "ssh.exec.peek")
        return FallbackPlan([PlannedStep(
            intent="ssh.exec.peek", why="the prompt asks to run or check something on a host",
            inputs={"host": run["host"], "command": run["command"]})])
    if (remember := REMEMBER.search(prompt)) is not None:
        if "memory.write" not in available:
            return _unavailable("Memory", "memory.write")
        return FallbackPlan([PlannedStep(intent="memory.write", why="the prompt asks to remember",
                                         inputs={"text": _rest(prompt, remember), **scope})])
    if (search := SEARCH.search(prompt)) is not None:
        if "memory.search" not in available:
            return _unavailable("Memory", "memory.search")
        return _search(_rest(prompt, search), "the prompt asks to search", scope)
    if QUESTION.match(prompt) is not None and "memory.search" in available:
        return _search(prompt.strip(" ?"), "a question: the notes may answer it", scope)
    return FallbackPlan(note="Without a model, only searching, remembering, questions the notes "
                             "may answer and running checks on a host are understood; this "
                             "request was not acted on.")


def _search(query: str, why: str, scope: dict[str, str]) -> FallbackPlan:
    return FallbackPlan([PlannedStep(intent="memory.search", why=why,
                                     inputs={"query": query, "k": 5, **scope})])


def answer(reason: str, note: str, findings: list[str]) -> str:
    """The rule-based answer: that the fallback was used and why, then what the steps found
    (`answers.found` of each step)."""
    lines = [f"The rule-based planner answered because {reason}."]
    lines += [f"{found}." for found in findings]
    lines += [note] if note else []
    return " ".join(lines)
