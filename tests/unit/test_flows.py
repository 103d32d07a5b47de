"""Flow definitions, their webhooks, and submitting a flow whose engine is not configured."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.flow import FlowSpec, load_flows, webhook_url
from api import service
from core.errors import InvalidRequest
from core.settings import FlowSettings, get_settings


def spec(**fields: object) -> FlowSpec:
    return FlowSpec.model_validate({"name": "x.flow", "engine": "n8n", "path": "p", **fields})


@pytest.mark.parametrize(("flow", "url"), [
    (spec(), "http://n8n:5678/webhook/p"),
    (spec(engine="activepieces", path="abc"), "https://ap/api/v1/webhooks/abc/sync"),
    (spec(engine="activepieces", path="abc", mode="async"), "https://ap/api/v1/webhooks/abc"),
], ids=["n8n", "activepieces-sync", "activepieces-async"])
def test_each_engine_has_its_webhook_url(flow: FlowSpec, url: str) -> None:
    settings = FlowSettings(n8n_webhook_base="http://n8n:5678/webhook/",
                            activepieces_base="https://ap/api/v1/webhooks")
    assert webhook_url(flow, settings) == url


def test_an_engine_without_a_base_url_says_which_setting_to_set() -> None:
    with pytest.raises(InvalidRequest, match="flow engine n8n is not configured: set "
                                             "N8N_WEBHOOK_BASE"):
        webhook_url(spec(), FlowSettings(n8n_webhook_base=""))


def test_the_flows_file_adds_flows_and_overrides_examples(tmp_path: Path) -> None:
    listed = tmp_path / "flows.json"
    listed.write_text('[{"name": "gmail.triage", "engine": "activepieces", "path": "f1"},'
                      ' {"name": "crm.sync", "engine": "n8n", "path": "crm"}]')
    flows = {f.name: f for f in load_flows(FlowSettings(flows_file=str(listed)))}
    assert flows["gmail.triage"].engine == "activepieces"
    assert {"crm.sync", "slack.summarize", "calendar.schedule"} <= set(flows)


@pytest.mark.parametrize("bad", [{"name": "NoDots"}, {"engine": "zapier"}, {"extra": 1}],
                         ids=["name", "engine", "unknown-field"])
def test_a_flow_definition_is_checked(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        spec(**bad)


@pytest.fixture
def no_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("N8N_WEBHOOK_BASE", "")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_submitting_a_flow_of_an_unconfigured_engine_is_refused(no_engines: None) -> None:
    request = service.Request(tenant_id="t", intent="gmail.triage", inputs={}, mode="auto",
                              context={}, callback_url=None, idempotency_key=None)
    with pytest.raises(InvalidRequest) as raised:
        service.plan(request, exposed=["*"])
    assert str(raised.value) == "flow engine n8n is not configured: set N8N_WEBHOOK_BASE"
    assert raised.value.field == "intent"
