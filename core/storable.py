"""A step's output made storable in the job store's JSON columns before it is recorded.

JSON has no NaN or Infinity: Postgres refuses them (`invalid input syntax for type json`) and
SQLite stores text no JSON reader accepts. An upstream may still answer them (Python's own
`json.loads` reads `NaN`), so they become null, and the paths replaced are reported.
"""

import math
from typing import Any

from core.errors import OrchestratorError

SCALARS = (str, int, bool, type(None))
KEYS = (str, int, float, bool, type(None))  # what `json.dumps` writes as an object key


class NotStorable(OrchestratorError):
    """Raised when a value holds something JSON cannot express (named by its path)."""


def storable(value: Any) -> tuple[Any, list[str]]:
    """`value` with each non-finite float (NaN, ±Infinity) replaced by None, and the paths of
    those replaced (`$.a.b[0]`); anything else JSON cannot hold raises NotStorable."""
    replaced: list[str] = []
    try:
        return _clean(value, "$", replaced), replaced
    except RecursionError as exc:
        raise NotStorable("the value is nested too deeply (or holds itself)") from exc


def _clean(value: Any, path: str, replaced: list[str]) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        replaced.append(path)
        return None
    if isinstance(value, SCALARS):
        return value
    if isinstance(value, dict):
        bad = [key for key in value if not isinstance(key, KEYS)]
        if bad:
            raise NotStorable(f"{path} has a key JSON cannot hold: {bad[0]!r}")
        return {key: _clean(item, f"{path}.{key}", replaced) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item, f"{path}[{n}]", replaced) for n, item in enumerate(value)]
    raise NotStorable(f"{path} is a {type(value).__name__}, which JSON cannot hold")
