"""The intent registry and submission planning."""

import pytest
from pydantic import BaseModel

from api import service
from core.errors import IntentNotFound, InvalidRequest
from tasks.registry import REGISTRY, Intent, Registry


def request(intent: str, inputs: dict, mode: str = "auto") -> service.Request:
    return service.Request(tenant_id="t", intent=intent, inputs=inputs, mode=mode, context={},
                           callback_url=None, idempotency_key=None)


def test_unknown_intent_names_the_available_ones() -> None:
    # Given an intent name nobody registered
    # When it is looked up
    with pytest.raises(IntentNotFound) as raised:
        REGISTRY.get("nope")
    # Then the error carries the seed contract's text, and the names as a list
    assert str(raised.value) == f"Intent 'nope' not found. Available: {REGISTRY.names()}"
    assert "debug.echo" in raised.value.available


def test_an_intent_cannot_be_registered_twice() -> None:
    registry = Registry()
    intent = Intent("x.y", "tools", "agent", BaseModel, "x", lambda _: [])
    registry.register(intent)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(intent)


def test_an_intent_needs_a_real_pool_and_mode() -> None:
    with pytest.raises(ValueError, match="unknown pool"):
        Intent("x.y", "gpu", "agent", BaseModel, "x", lambda _: [])


def test_chain_plans_one_step_per_link() -> None:
    _, inputs, steps = service.plan(request("debug.chain", {"steps": 4, "delay": 0.5}))
    assert inputs == {"steps": 4, "delay": 0.5}
    assert [s.inputs["step"] for s in steps] == [1, 2, 3, 4]
    assert {s.task for s in steps} == {"tasks.tools.chain_link"}


def test_invalid_inputs_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as raised:
        service.plan(request("debug.sleep", {"seconds": 99999}))
    assert raised.value.field == "inputs.seconds"


def test_a_mode_other_than_the_intents_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="runs in mode 'agent'"):
        service.plan(request("debug.echo", {}, mode="flow"))


def test_default_idempotency_key_ignores_key_order_but_not_values() -> None:
    key = service.default_idempotency_key
    assert key("t", "i", {"a": 1, "b": 2}) == key("t", "i", {"b": 2, "a": 1})
    assert key("t", "i", {"a": 1}) != key("t", "i", {"a": 2})
    assert key("t", "i", {"a": 1}) != key("u", "i", {"a": 1})


@pytest.mark.parametrize(("wait", "expected"), [(False, 0.0), (True, 8.0), (3, 3.0), (60, 8.0),
                                                (-1, 0.0)])
def test_wait_is_clamped_to_the_sync_timeout(wait: float | bool, expected: float) -> None:
    assert service.clamp_wait(wait, 8.0) == expected
