"""What /metrics exposes about upstreams: bounded labels, no tenant's host names."""

from api.metrics import bounded

HOST = "tenant-a-private-host.example"


def test_callback_hosts_are_counted_not_named() -> None:
    # Given the breakers of two tenant callback hosts and one shared upstream
    samples = [
        ("orchestrator_breaker_state", {"upstream": f"callback:{HOST}"}, 2.0),
        ("orchestrator_breaker_state", {"upstream": "callback:" + "a" * 3000}, 0.0),
        ("orchestrator_breaker_state", {"upstream": "llm"}, 1.0),
        ("orchestrator_upstream_failures_total", {"upstream": f"callback:{HOST}"}, 3.0),
        ("orchestrator_upstream_failures_total", {"upstream": "callback:" + "a" * 3000}, 4.0),
        ("orchestrator_upstream_failures_total", {"upstream": "llm"}, 5.0),
    ]
    # When they are made into metrics
    result = bounded(samples)
    # Then no host name is a label; callback breakers are counted by state, failures summed
    label_values = [value for _, labels, _ in result for value in labels.values()]
    assert not [value for value in label_values if value.startswith("callback:")]
    assert ("orchestrator_callback_breakers", {"state": "open"}, 1.0) in result
    assert ("orchestrator_callback_breakers", {"state": "closed"}, 1.0) in result
    assert ("orchestrator_callback_breakers", {"state": "half-open"}, 0.0) in result
    assert ("orchestrator_upstream_failures_total", {"upstream": "callback"}, 7.0) in result
    assert ("orchestrator_upstream_failures_total", {"upstream": "llm"}, 5.0) in result
    assert ("orchestrator_breaker_state", {"upstream": "llm"}, 1.0) in result
