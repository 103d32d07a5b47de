"""Fitting the planning prompt into a model's context, and answers made of what steps found."""

import pytest

from adapters.llm import estimate
from tasks import answers, budget, fallback, planning
from tasks.intents import BUILTIN

INTENTS = sorted(BUILTIN.intents(None), key=lambda i: i.name)
HISTORY = [("user", "Remember that the nightly backup runs at 2am on db01."),
           ("assistant", "Remembered it.")] * 3
PROMPT = "Search my notes: when does the nightly backup run?"


def request(recent: set[str] | None = None) -> budget.Request:
    return budget.Request(PROMPT, HISTORY, INTENTS, recent or set(), 1, 8)


def fit(tokens: int, recent: set[str] | None = None) -> budget.Fitted:
    return budget.fit_plan(request(recent), tokens, estimate)


def full_size() -> int:
    return budget.measure(planning.messages(PROMPT, HISTORY, INTENTS, 1, 8), estimate)


def test_everything_is_offered_in_full_when_it_fits() -> None:
    fitted = fit(full_size())
    assert not fitted.compact and fitted.history == len(HISTORY)
    assert len(fitted.offered) == len(INTENTS) and fitted.tokens <= full_size()


def test_a_smaller_budget_gets_compact_signatures_before_history_is_cut() -> None:
    fitted = fit(full_size() - 1)
    assert fitted.compact and len(fitted.offered) == len(INTENTS)
    assert "- memory.search(query: str, " in fitted.messages[0]["content"]
    assert fitted.tokens <= full_size() - 1


def test_history_is_cut_before_intents_and_the_relevant_intents_stay() -> None:
    alone = budget.measure(planning.messages(PROMPT, [], INTENTS, 1, 8, compact=True), estimate)
    # Given room for every compact intent but not the whole history
    fitted = fit(alone + 20)
    assert len(fitted.offered) == len(INTENTS) and fitted.history < len(HISTORY)
    # When even the intents do not all fit
    small = fit(alone - 150)
    # Then history is gone, and the most relevant intents are those offered
    assert small.history == 0 and 0 < len(small.offered) < len(INTENTS)
    assert "memory.search" in [i.name for i in small.offered]
    assert small.tokens <= alone - 150


def test_intents_the_session_used_recently_stay_with_their_family() -> None:
    base = budget.measure(planning.messages(PROMPT, [], [], 1, 8, compact=True), estimate)
    kept = fit(base + 60, recent={"debug.sleep"})
    assert [i.name for i in kept.offered] == ["debug.sleep"]
    assert [i.name for i in budget.preference(PROMPT, INTENTS, {"memory.write"})][:3] == [
        "memory.write", "memory.search", "memory.delete"]


def test_a_request_that_cannot_fit_alone_is_refused_clearly() -> None:
    with pytest.raises(budget.PromptTooLong, match="too long for the model's context"):
        fit(50)


def test_ranking_puts_the_intent_the_prompt_names_first() -> None:
    assert budget.rank(PROMPT, INTENTS)[0].name == "memory.search"
    assert budget.rank("remember the door code", INTENTS)[0].name == "memory.write"


@pytest.mark.parametrize(("intent", "output", "said"), [
    ("memory.search", {"results": [{"text": "the nightly backup runs at 2am on db01"}]},
     'Found 1 note: "the nightly backup runs at 2am on db01"'),
    ("memory.search", {"results": [{"text": "a"}, {"text": "b"}]}, 'Found 2 notes: "a"; "b"'),
    ("memory.search", {"results": []}, "Found no notes"),
    ("ssh.exec.peek", {"host": "box", "command": "uptime", "exit_status": 0,
                       "stdout": "\n 10:00 up 3 days\nmore\n"},
     'The command "uptime" on box exited with status 0; first lines: "10:00 up 3 days / more"'),
    ("http.request", {"status": 404, "body": "x"}, "http.request answered with status 404"),
    ("memory.write", {"item_id": "m1", "status": "stored"}, "Remembered it"),
], ids=["one-note", "two-notes", "no-notes", "command", "tool", "write"])
def test_what_a_step_found_is_said_plainly(intent: str, output: object, said: str) -> None:
    assert answers.found(intent, output) == said


def test_the_rule_based_answer_quotes_what_was_found() -> None:
    found = answers.found("memory.search",
                          {"results": [{"text": "the nightly backup runs at 2am on db01"}]})
    text = fallback.answer("no model is configured", "", [found])
    assert text.endswith('Found 1 note: "the nightly backup runs at 2am on db01".')
