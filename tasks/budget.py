"""Fitting a prompt into the model's context: what to offer the planner when not everything fits.

The order of sacrifice: full intent lines become compact signatures, then the session's history
goes (oldest first), then the least relevant intents (those the session used recently stay
longest). Relevance is BM25 over each intent's name, description and field names: cheap,
deterministic and in-process (the `llm` pool loads no embedding model).
"""

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks import planning
from tasks.engine.registry import Intent

Count = Callable[[str], int]
MESSAGE_TOKENS = 8  # what a chat template adds around one message
REPAIR_TOKENS = 320  # room kept for the repair round: the invalid plan (cut) and the error
MARGIN = 0.05  # the share of the context kept free for the template and counting error
WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset(re.findall(r"\w+", "a an and are at be by can do does for from how i in is it "
                                   "me my of on or please the this to was what when where "
                                   "which who why will with you"))
K1, B = 1.2, 0.75


class PromptTooLong(ValueError):
    """Raised when the request alone does not fit in the model's context."""


@dataclass
class Fitted:
    """A planning conversation that fits, and what was left out to make it fit."""

    messages: list[dict[str, Any]]
    offered: list[Intent]
    compact: bool
    history: int
    tokens: int
    budget: int

    def public(self, total: int) -> dict[str, Any]:
        """What the plan step's output says about its prompt."""
        return {"tokens": self.tokens, "budget": self.budget, "compact": self.compact,
                "intents_offered": len(self.offered), "intents_total": total,
                "history_messages": self.history}


def plan_budget(context: int, max_tokens: int) -> int:
    """Prompt tokens a plan may use: the context less the answer, a repair round and a margin."""
    return int(context * (1 - MARGIN)) - max_tokens - REPAIR_TOKENS


def _terms(text: str) -> list[str]:
    words = WORD.findall(text.lower().replace("_", " "))
    return [_stem(w) for w in words if w not in STOP]


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[:-len(suffix)]
    return word


def _document(intent: Intent) -> list[str]:
    fields = " ".join(intent.schema().get("properties", {}))
    return _terms(f"{intent.name.replace('.', ' ')} {intent.description} {fields}")


def rank(prompt: str, intents: list[Intent]) -> list[Intent]:
    """The intents by BM25 relevance to `prompt`, most relevant first (ties keep order)."""
    docs = [Counter(_document(i)) for i in intents]
    if not docs:
        return []
    mean = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    query = set(_terms(prompt))

    def score(doc: Counter[str]) -> float:
        length = sum(doc.values())
        total = 0.0
        for term in query & set(doc):
            having = sum(1 for d in docs if term in d)
            idf = math.log(1 + (len(docs) - having + 0.5) / (having + 0.5))
            tf = doc[term]
            total += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / mean))
        return total
    scored = sorted(enumerate(docs), key=lambda pair: (-score(pair[1]), pair[0]))
    return [intents[n] for n, _ in scored]


def _closeness(name: str, recent: set[str]) -> int:
    """0: used recently by the session; 1: of a used one's family (memory.write → memory.search);
    2: neither."""
    if name in recent:
        return 0
    family = name.rsplit(".", 1)[0]
    return 1 if any(r.rsplit(".", 1)[0] == family for r in recent) else 2


def preference(prompt: str, intents: list[Intent], recent: set[str]) -> list[Intent]:
    """The order intents are kept in: those the session used, their families, then by rank."""
    ranked = rank(prompt, intents)
    return sorted(ranked, key=lambda i: _closeness(i.name, recent))  # stable: rank within


@dataclass
class Request:
    """What a plan is asked from: the prompt, the recent turns and the intents on offer."""

    prompt: str
    history: list[tuple[str, str]]
    intents: list[Intent]
    recent: set[str]
    first: int
    most: int


def fit_plan(req: Request, budget: int, count: Count) -> Fitted:
    """The largest planning conversation within `budget` tokens (see the module's order)."""
    keep = preference(req.prompt, req.intents, req.recent)
    for compact in (False, True):
        if (done := _try(req, keep, len(req.history), compact, budget, count)) is not None:
            return done
    for history in range(len(req.history) - 1, -1, -1):
        if (done := _try(req, keep, history, True, budget, count)) is not None:
            return done
    best, low, high = None, 0, len(keep) - 1  # the most intents that fit, by bisection
    while low <= high:
        middle = (low + high) // 2
        if (done := _try(req, keep[:middle], 0, True, budget, count)) is not None:
            best, low = done, middle + 1
        else:
            high = middle - 1
    if best is not None:
        return best
    alone = count(req.prompt)
    raise PromptTooLong(f"the request is about {alone} tokens, too long for the model's "
                        f"context ({budget} tokens for a plan)")


def _try(req: Request, keep: list[Intent], history: int, compact: bool, budget: int,
         count: Count) -> Fitted | None:
    # Offered in registry order (as listed in `req.intents`): stable for the model's cache.
    names = {i.name for i in keep}
    chosen = [i for i in req.intents if i.name in names]
    recent = req.history[len(req.history) - history:] if history else []
    messages = planning.messages(req.prompt, recent, chosen, req.first, req.most, compact)
    tokens = measure(messages, count)
    if tokens > budget:
        return None
    return Fitted(messages, chosen, compact, history, tokens, budget)


def measure(messages: list[dict[str, Any]], count: Count) -> int:
    """Tokens of a conversation: each message's text and the template around it."""
    return sum(count(str(m["content"])) + MESSAGE_TOKENS for m in messages)
