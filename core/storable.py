"""A step's output made storable in the job store's JSON columns before it is recorded.

JSON has no NaN or Infinity: Postgres refuses them (`invalid input syntax for type json`) and
SQLite stores text no JSON reader accepts. An upstream may still answer them (Python's own
`json.loads` reads `NaN`), so they become null. Postgres text cannot hold NUL, and no UTF-8
text can hold a lone surrogate (`json.loads` reads `"\\ud800"`), so those characters become
U+FFFD. The paths replaced are reported, by what replaced them.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Any

from core.errors import OrchestratorError

SCALARS = (int, bool, type(None))
KEYS = (str, int, float, bool, type(None))  # what `json.dumps` writes as an object key
REPLACEMENT = "\ufffd"
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


class NotStorable(OrchestratorError):
    """Raised when a value holds something JSON cannot express (named by its path)."""


@dataclass
class Replaced:
    """The paths whose values were replaced, by kind."""

    numbers: list[str] = field(default_factory=list)  # NaN and ±Infinity, now null
    text: list[str] = field(default_factory=list)  # strings (or keys) that held NUL or surrogates

    def __bool__(self) -> bool:
        return bool(self.numbers or self.text)


def storable(value: Any) -> tuple[Any, Replaced]:
    """`value` with each non-finite float replaced by None and each NUL or lone surrogate in a
    string by U+FFFD, and the paths replaced (`$.a.b[0]`); anything else JSON cannot hold
    raises NotStorable."""
    replaced = Replaced()
    try:
        return _clean(value, "$", replaced), replaced
    except RecursionError as exc:
        raise NotStorable("the value is nested too deeply (or holds itself)") from exc


def _clean(value: Any, path: str, replaced: Replaced) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        replaced.numbers.append(path)
        return None
    if isinstance(value, str):
        return _text(value, path, replaced)
    if isinstance(value, SCALARS):
        return value
    if isinstance(value, dict):
        return _object(value, path, replaced)
    if isinstance(value, list | tuple):
        return [_clean(item, f"{path}[{n}]", replaced) for n, item in enumerate(value)]
    raise NotStorable(f"{path} is a {type(value).__name__}, which JSON cannot hold")


def _object(value: dict[Any, Any], path: str, replaced: Replaced) -> dict[Any, Any]:
    bad = [key for key in value if not isinstance(key, KEYS)]
    if bad:
        raise NotStorable(f"{path} has a key JSON cannot hold: {bad[0]!r}")
    cleaned: dict[Any, Any] = {}
    for key, item in value.items():
        # The key cleaned first: a path naming it is stored in an event too.
        name = _text(key, f"{path}.{_safe(key)}", replaced) if isinstance(key, str) else key
        cleaned[name] = _clean(item, f"{path}.{name}", replaced)
    return cleaned


def _text(value: str, path: str, replaced: Replaced) -> str:
    if not UNSTORABLE_TEXT.search(value):
        return value
    replaced.text.append(path)
    return _safe(value)


def _safe(text: str) -> str:
    return UNSTORABLE_TEXT.sub(REPLACEMENT, text)
