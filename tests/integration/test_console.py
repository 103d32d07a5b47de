"""The console in a real Chromium (Debian's, driven by Playwright) against a real stack: the
API under uvicorn, workers, Valkey, SQLite (and Postgres for the approvals), the scripted
OpenAI-compatible server streaming deltas, and the loopback sshd."""

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Request,
    expect,
    sync_playwright,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from adapters.breakers import Breakers
from core.errors import UpstreamError
from core.models import Job, JobStatus, utcnow
from core.settings import BreakerSettings
from core.store.tenants import create_tenant_key
from core.vault import Vault
from tests.conftest import keep
from tests.integration import agent_server
from tests.integration.conftest import (
    SECRET_KEY,
    SshServers,
    Stack,
    running_stack,
    wait_job,
)
from tests.integration.llm_server import Reply, Script, plan, scripted_llm
from tests.integration.receiver import reply, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Every host but the stacks' (127.0.0.1) fails to resolve.
HOST_RULES = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
ARTIFACTS = Path(tempfile.gettempdir()) / "orchestrator-console-artifacts"
WAIT_MS = 30_000  # the machine is shared: wait on conditions, generously
expect.set_options(timeout=WAIT_MS)
FIRST_RENDER_MS = 300
LONG_ANSWER = " ".join(f"word{n}" for n in range(40))
# Set CONSOLE_SCREENSHOTS=docs/console to refresh the README's screenshots.
ARTIFACTS_README = Path(p) if (p := os.environ.get("CONSOLE_SCREENSHOTS")) else None


@pytest.fixture(scope="module")
def llm() -> Iterator[tuple[str, Script]]:
    with scripted_llm() as (server, script):
        yield server.url, script


def _env(llm_url: str, ssh: SshServers) -> dict[str, str]:
    return {"LLM_BASE_URL": f"{llm_url}/v1", "LLM_API_KEY": "test-key", "LLM_MODEL": "scripted",
            "LLM_PRICES": '{"scripted": {"prompt": 1, "completion": 2}}',
            "LLM_TIMEOUT": "10", "SSH_HOSTS": ssh.hosts}


@pytest.fixture(scope="module")
def sqlite_stack(request: pytest.FixtureRequest, llm: tuple[str, Script],
                 ssh_servers: SshServers) -> Iterator[Stack]:
    with running_stack(request, "sqlite", 13, _env(llm[0], ssh_servers), name="console",
                       split_workers=False) as running:
        yield running


@pytest.fixture(scope="module")
def postgres_stack(request: pytest.FixtureRequest, llm: tuple[str, Script],
                   ssh_servers: SshServers) -> Iterator[Stack]:
    with running_stack(request, "postgres", 14, _env(llm[0], ssh_servers), name="console_pg",
                       split_workers=False) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM,
                                          args=["--no-sandbox", HOST_RULES])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def off_host() -> list[str]:
    """Every request a page tried to send anywhere but the stack under test."""
    return []


def _context(browser: Browser, stack: Stack, off_host: list[str],
             viewport: dict[str, int]) -> BrowserContext:
    """A fresh context whose requests off the stack's host are noted (`off_host`).

    Noted from the `request` event, which never holds a request: a `route` handler would hold
    every request of the page until this (sync) test next called Playwright, so a click's
    POST sat unsent while a test polled the API with httpx. The browser resolves no name
    (`HOST_RULES`), so a noted request also never leaves the machine."""
    context = browser.new_context(base_url=stack.url, viewport=viewport)  # type: ignore[arg-type]
    home = urlsplit(stack.url).netloc

    def note(request: Request) -> None:
        if urlsplit(request.url).netloc != home and not request.url.startswith("data:"):
            off_host.append(request.url)

    context.on("request", note)
    return context


def _page(request: pytest.FixtureRequest, browser: Browser, stack: Stack, off_host: list[str],
          viewport: dict[str, int]) -> Iterator[Page]:
    """A page of a fresh context; a screenshot of it is kept when the test failed."""
    failed_before = request.session.testsfailed
    context = _context(browser, stack, off_host, viewport)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        yield page
    finally:
        if request.session.testsfailed > failed_before:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / f"{request.node.name}-{uuid.uuid4().hex[:6]}.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
        context.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, sqlite_stack: Stack,
         off_host: list[str]) -> Iterator[Page]:
    yield from _page(request, browser, sqlite_stack, off_host, {"width": 1280, "height": 800})


@pytest.fixture
def phone(request: pytest.FixtureRequest, browser: Browser, sqlite_stack: Stack,
          off_host: list[str]) -> Iterator[Page]:
    yield from _page(request, browser, sqlite_stack, off_host, {"width": 390, "height": 844})


@pytest.fixture(params=["sqlite", "postgres"])
def approvals(request: pytest.FixtureRequest, browser: Browser,
              off_host: list[str]) -> Iterator[tuple[Stack, Page]]:
    """A page on the SQLite stack, then on the Postgres one."""
    stack: Stack = request.getfixturevalue(f"{request.param}_stack")
    for page in _page(request, browser, stack, off_host, {"width": 1280, "height": 800}):
        yield stack, page


@pytest.fixture
def script(llm: tuple[str, Script]) -> Script:
    llm[1].set()
    return llm[1]


def sign_in(page: Page, key: str, path: str = "/console") -> None:
    page.goto(path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()


def tenant_key(stack: Stack) -> tuple[str, str]:
    """A new tenant's id and key."""
    with stack.db.write() as session:
        tenant, raw = create_tenant_key(session=session, vault=Vault([SECRET_KEY]),
                                        tenant_name=f"t-{uuid.uuid4().hex[:8]}")
        return tenant.id, raw


def add_jobs(stack: Stack, tenant_id: str, count: int) -> None:
    """`count` finished jobs straight into the store, one second apart, newest first:
    every third `debug.sleep` (failed), the others `debug.echo` (succeeded)."""
    now = utcnow()
    with stack.db.write() as session:
        for n in range(count):
            sleep = n % 3 == 0
            created = now - timedelta(seconds=n + 1)
            session.add(Job(id=f"job_{uuid.uuid4().hex}", tenant_id=tenant_id,
                            intent="debug.sleep" if sleep else "debug.echo", mode="agent",
                            status=JobStatus.failed if sleep else JobStatus.succeeded,
                            inputs={"n": n}, created_at=created, started_at=created,
                            finished_at=created + timedelta(milliseconds=40), progress=1.0))


def job_ids(page: Page) -> list[str]:
    return page.locator("table.jobs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.job)")


# --- sign-in, security headers, another tenant's job -------------------------------------------


def test_a_page_sends_its_requests_while_the_test_polls_the_api(page: Page,
                                                                sqlite_stack: Stack) -> None:
    """The page watch holds no request: a click's POST reaches the API while the test waits on
    it with httpx alone (a `route` guard held it until the next Playwright call: 30 s)."""
    _, key = tenant_key(sqlite_stack)
    page.goto("/console")
    page.evaluate("""key => setTimeout(() => fetch('/v1/jobs', {method: 'POST',
        headers: {Authorization: `Bearer ${key}`, 'Content-Type': 'application/json'},
        body: JSON.stringify({intent: 'debug.echo', inputs: {x: 1}})}), 300)""", key)
    with sqlite_stack.client(key) as client:
        deadline = time.monotonic() + 10
        while not client.get("/v1/jobs").json()["items"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/v1/jobs").json()["items"], "the page's POST was not sent"


def test_a_wrong_key_is_a_clear_message_and_the_console_sends_strict_headers(
        page: Page, sqlite_stack: Stack) -> None:
    # Given the console, when a wrong key is tried
    answer = page.goto("/console")
    assert answer is not None
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    # Then the API's reason is shown, and the key is in no URL
    expect(page.get_by_role("alert")).to_contain_text("That API key was not accepted")
    assert "not-a-key" not in page.url
    # And every console answer carries the CSP (no inline script) and refuses framing
    for response in (answer, httpx.get(f"{sqlite_stack.url}/console/static/js/main.js"),
                     httpx.get(f"{sqlite_stack.url}/console/jobs/anything")):
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY"
    html = httpx.get(f"{sqlite_stack.url}/console").text
    assert "<script>" not in html and " on" not in html.replace(" only", "")


def test_another_tenants_job_url_shows_not_found(page: Page, sqlite_stack: Stack) -> None:
    # Given a job of tenant A
    _, key_a = tenant_key(sqlite_stack)
    with sqlite_stack.client(key_a) as a:
        job_id = a.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"x": 1}}).json()[
            "job_id"]
    # When tenant B opens its URL
    _, key_b = tenant_key(sqlite_stack)
    sign_in(page, key_b)
    page.goto(f"/console/jobs/{job_id}")
    # Then it is not found, and nothing of it shows
    expect(page.get_by_role("heading", name="Job not found")).to_be_visible()
    expect(page.locator("main")).to_contain_text("not found")
    expect(page.locator("main")).not_to_contain_text("debug.echo")


# --- chat --------------------------------------------------------------------------------------


MUTATIONS = """() => {
  window.__streamed = 0;
  new MutationObserver((records) => {
    for (const r of records) {
      const text = r.target.closest && r.target.closest('.answer-text');
      if (text && text.dataset.state === 'streaming' && r.addedNodes.length) window.__streamed++;
    }
  }).observe(document.querySelector('#chat .log'), {childList: true, subtree: true});
}"""


def send(page: Page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".answer-text").last).to_have_attribute("data-state", "done")


def test_chat_streams_the_answer_with_the_plan_and_remembers_a_fact(
        page: Page, sqlite_stack: Stack, script: Script) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:6]}"
    fact = "the backup runs at 2am"
    script.set(plans=[
        plan({"intent": "memory.write", "inputs": {"text": fact, "namespace": namespace},
              "why": "remember it"}),
        plan({"intent": "memory.search", "why": "recall it",
              "inputs": {"query": "when does the backup run", "namespace": namespace}})],
        answers=[Reply("Noted. " + LONG_ANSWER), Reply("From memory: " + LONG_ANSWER)])
    _, key = tenant_key(sqlite_stack)
    sign_in(page, key)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    # When the fact is told, then a question asked
    send(page, f"remember that {fact}")
    page.evaluate(MUTATIONS)
    send(page, "when does the backup run?")
    # Then the answer streamed (several DOM updates before its end) and holds the fact found
    assert page.evaluate("window.__streamed") >= 3
    answer = page.locator(".answer-text").last
    expect(answer).to_contain_text("2am")
    # And its plan's step ran (live state), its output folds open, usage and cost are shown
    last = page.locator("#chat .msg.assistant").last
    step = last.locator(".plan-step").first
    expect(step).to_have_attribute("data-status", "succeeded")
    expect(last.locator(".usage")).to_contain_text("cost $")
    if ARTIFACTS_README:
        page.screenshot(path=str(ARTIFACTS_README / "chat.png"))
    step.locator("summary").click()
    expect(step.locator("pre")).to_contain_text("2am")
    # And both messages are in the session's transcript after a reload
    page.reload()
    expect(page.locator("#chat .msg.user")).to_have_count(2)
    # which the session list names; a new session starts empty, and switching back restores it
    with sqlite_stack.client(key) as client:
        sessions = [row["id"] for row in client.get("/v1/sessions").json()]
    current = page.locator("#chat-session").input_value()
    assert sessions == [current]
    page.get_by_role("button", name="New session").click()
    expect(page.locator("#chat .msg.user")).to_have_count(0)
    page.locator("#chat-session").select_option(current)
    expect(page.locator("#chat .msg.user")).to_have_count(2)


# --- approvals ---------------------------------------------------------------------------------


def held_rm(client: httpx.Client, path: Path) -> str:
    job_id: str = client.post("/v1/jobs", headers={"Idempotency-Key": uuid.uuid4().hex}, json={
        "intent": "ssh.exec", "inputs": {"host": "shared", "command": f"rm -rf {path}",
                                         "confirm_dangerous": True}}).json()["job_id"]
    return job_id


def test_a_held_rm_rf_is_rejected_then_another_approved_from_the_inbox(
        approvals: tuple[Stack, Page], tmp_path: Path) -> None:
    stack, page = approvals
    target = tmp_path / "doomed"
    target.mkdir()
    _, key = tenant_key(stack)
    with stack.client(key) as client:
        first = held_rm(client, target)
        sign_in(page, key, "/console/inbox")
        # The held step shows its host and exact command, and the header counts it
        card = page.locator(f"article.pending[data-job='{first}']")
        expect(card.locator(".host")).to_have_text("shared")
        expect(card.locator(".command")).to_have_text(f"rm -rf {target}")
        expect(card.locator(".reason")).to_contain_text("dangerous command")
        expect(page.locator("#inbox-count")).to_have_text("1")
        expect(page.locator("main")).not_to_contain_text(
            client.get(f"/v1/jobs/{first}").json()["pending"]["token"])
        # Reject: the directory stays
        card.get_by_role("textbox", name="Reason for rejecting").fill("not today")
        card.get_by_role("button", name="Reject").click()
        assert wait_job(client, first)["status"] == "failed"
        assert target.exists()
        # A second one, approved: the directory goes
        second = held_rm(client, target)
        page.reload()
        expect(page.locator(f"article.pending[data-job='{second}']")).to_be_visible()
        if ARTIFACTS_README and "sqlite" in stack.logs.name:
            page.screenshot(path=str(ARTIFACTS_README / "inbox.png"))
        page.locator(f"article.pending[data-job='{second}']").get_by_role(
            "button", name="Approve").click()
        assert wait_job(client, second)["status"] == "succeeded"
        assert not target.exists()
    # Both jobs' pages show their end state
    page.goto(f"/console/jobs/{first}")
    expect(page.locator("#job-status")).to_have_text("failed")
    expect(page.locator(".job-error")).to_contain_text("not today")
    page.goto(f"/console/jobs/{second}")
    expect(page.locator("#job-status")).to_have_text("succeeded")
    expect(page.locator(".step[data-index='0']")).to_have_attribute("data-status", "succeeded")


def test_the_inbox_route_shows_only_the_callers_held_steps(sqlite_stack: Stack,
                                                          tmp_path: Path) -> None:
    _, key_a = tenant_key(sqlite_stack)
    _, key_b = tenant_key(sqlite_stack)
    with sqlite_stack.client(key_a) as a, sqlite_stack.client(key_b) as b:
        job_id = held_rm(a, tmp_path / "kept")
        deadline = time.monotonic() + 30
        while not (items := a.get("/v1/inbox").json()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(i["job_id"], i["status"], i["host"]) for i in items] == [
            (job_id, "held", "shared")]
        assert items[0]["token"] and items[0]["deadline"]
        assert b.get("/v1/inbox").json() == []
        # B cannot approve A's step with A's token (the job is not B's)
        assert b.post(f"/v1/jobs/{job_id}/approve",
                      json={"token": items[0]["token"]}).status_code == 404
        a.post(f"/v1/jobs/{job_id}/reject", json={"reason": "cleanup"})


def same_time(element: Locator, iso: str) -> bool:
    """Whether a <time> element's `datetime` is the moment `iso` (whatever its format)."""
    shown = element.get_attribute("datetime")
    return shown is not None and datetime.fromisoformat(shown) == datetime.fromisoformat(iso)


def test_a_waiting_step_shows_what_it_waits_for_and_leaves_the_inbox_when_resumed(
        approvals: tuple[Stack, Page]) -> None:
    stack, page = approvals
    why = "the payment provider's webhook"
    _, key = tenant_key(stack)
    with stack.client(key) as client:
        job_id = client.post("/v1/jobs", json={"intent": "debug.wait", "inputs": {
            "reason": why, "timeout": 900}}).json()["job_id"]
        deadline = time.monotonic() + 30
        while not (items := client.get("/v1/inbox").json()) and time.monotonic() < deadline:
            time.sleep(0.1)
        [item] = items
        sign_in(page, key, "/console/inbox")
        # The inbox shows what it waits for and until when; there is nothing to approve
        card = page.locator(f"article.pending[data-job='{job_id}']")
        expect(card.locator(".reason")).to_have_text(why)
        assert same_time(card.locator("time"), item["deadline"])
        expect(card.get_by_role("button", name="Approve")).to_have_count(0)
        expect(page.locator("#inbox-count")).to_have_text("1")
        # So does the job page, its step waiting
        card.get_by_role("link", name=job_id).click()
        expect(page.locator(".step[data-index='0']")).to_have_attribute("data-status", "waiting")
        expect(page.locator(f"article.pending[data-job='{job_id}'] .reason")).to_have_text(why)
        assert same_time(page.locator(f"article.pending[data-job='{job_id}'] time"),
                         item["deadline"])
        # When the outside system posts to the resume URL (no key), the step is done
        resume_url = client.get(f"/v1/jobs/{job_id}").json()["pending"]["resume_url"]
        assert httpx.post(resume_url, json={"paid": True}).status_code == 200
        expect(page.locator("#job-status")).to_have_text("succeeded")
        expect(page.locator("article.pending")).to_have_count(0)
        # And it has left the inbox
        page.get_by_role("link", name="Inbox").click()
        expect(page.get_by_text("Nothing is held or waiting.")).to_be_visible()
        expect(page.locator("#inbox-count")).to_have_text("0")


def tab_to(page: Page, selector: str, presses: int = 60) -> None:
    """Press Tab until the element `selector` has the focus."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


CONTROLS = "main a, main button, main input, main select, main textarea, main summary"


def tab_walk(page: Page) -> None:
    """Every control in main is reached by Tab (from the top of the page)."""
    count = page.evaluate(f"""() => {{
      const all = [...document.querySelectorAll({json.dumps(CONTROLS)})];
      all.forEach((el, n) => {{ el.dataset.ctl = n; }});
      window.__reached = new Set();
      document.addEventListener('focusin', (e) => {{
        const n = e.target.dataset && e.target.dataset.ctl;
        if (n !== undefined) window.__reached.add(n);
      }});
      return all.length;
    }}""")
    page.evaluate("document.activeElement.blur()")
    for _ in range(count + 30):
        page.keyboard.press("Tab")
    reached = page.evaluate("window.__reached.size")
    missed = page.evaluate("""() => [...document.querySelectorAll('[data-ctl]')]
      .filter((el) => !window.__reached.has(el.dataset.ctl))
      .map((el) => el.outerHTML.slice(0, 80))""")
    assert reached == count, f"not reached by Tab: {missed}"


def test_the_approve_flow_by_keyboard_on_the_inbox_and_job_page(
        page: Page, sqlite_stack: Stack, tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "one", tmp_path / "two"
    first_dir.mkdir()
    second_dir.mkdir()
    _, key = tenant_key(sqlite_stack)
    with sqlite_stack.client(key) as client:
        first, second = held_rm(client, first_dir), held_rm(client, second_dir)
        # Sign in by keyboard (the key field has the focus), then Tab to the Inbox link
        page.goto("/console/inbox")
        expect(page.get_by_label("API key")).to_be_focused()
        page.keyboard.type(key)
        page.keyboard.press("Enter")
        expect(page.locator("article.pending")).to_have_count(2)
        tab_walk(page)
        # Approve the first with Enter
        page.locator("body").focus()
        tab_to(page, f"article.pending[data-job='{first}'] button.approve")
        page.keyboard.press("Enter")
        expect(page.locator(f"article.pending[data-job='{first}']")).to_have_count(0)
        assert wait_job(client, first, timeout=60)["status"] == "succeeded"
        assert not first_dir.exists()
        # The focus stays on the list (not the page's top): the next Tab is the second's link
        expect(page.locator("article.pending")).to_have_count(1)
        expect(page.locator("div.cards")).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.locator(f"article.pending a[href='/console/jobs/{second}']")).to_be_focused()
        # Open the second's job page with Enter on its link, approve it there with Space
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=f"Job {second}")).to_be_visible()
        expect(page.locator(f"article.pending[data-job='{second}']")).to_be_visible()
        expect(page.locator("ol.events")).to_contain_text("step_held")
        tab_walk(page)
        page.locator("body").focus()
        tab_to(page, f"article.pending[data-job='{second}'] button.approve")
        page.keyboard.press("Space")
        expect(page.locator("#job-status")).to_have_text("succeeded")
        assert wait_job(client, second)["status"] == "succeeded"
    assert not second_dir.exists()


# --- jobs --------------------------------------------------------------------------------------


def test_the_job_list_filters_and_pages_over_250_jobs(page: Page, sqlite_stack: Stack) -> None:
    tenant_id, key = tenant_key(sqlite_stack)
    add_jobs(sqlite_stack, tenant_id, 250)
    sign_in(page, key, "/console/jobs")
    # 50 a page, newest first; the next page follows with no overlap, to the end
    seen: list[str] = []
    for _ in range(5):
        expect(page.locator("table.jobs tbody tr")).to_have_count(50)
        ids = job_ids(page)
        assert not set(ids) & set(seen)
        seen += ids
        if len(seen) < 250:
            page.get_by_role("link", name="Next page").click()
            expect(page.locator("table.jobs tbody tr").first).not_to_have_attribute(
                "data-job", ids[0])
    assert len(set(seen)) == 250
    # A reload keeps the last page; Previous page walks back through the same pages to the first
    page.reload()
    expect(page.locator("table.jobs tbody tr").first).to_have_attribute("data-job", seen[200])
    for start in (150, 100, 50, 0):
        page.get_by_role("link", name="Previous page").click()
        expect(page.locator("table.jobs tbody tr").first).to_have_attribute("data-job", seen[start])
        assert job_ids(page) == seen[start:start + 50]
    expect(page.get_by_role("link", name="Previous page")).to_have_count(0)
    # Filter by status, then by intent too: only those, and the URL can be shared
    page.goto("/console/jobs")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(f"{sqlite_stack.url}/console/jobs?status=failed")
    expect(page.locator("table.jobs tbody tr")).to_have_count(50)
    statuses = page.locator("table.jobs tbody .badge").all_inner_texts()
    assert set(statuses) == {"failed"}
    page.get_by_role("link", name="Next page").click()
    expect(page.locator("table.jobs tbody tr")).to_have_count(34)  # 84 failed: 50 + 34
    page.goto("/console/jobs?status=succeeded&intent=debug.sleep")
    expect(page.get_by_text("No jobs match.")).to_be_visible()


BREAKDOWN = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const jobs = res.find(r => r.name.includes('/v1/jobs?'));
  const scripts = res.filter(r => r.name.endsWith('.js'));
  return {html: Math.round(nav.responseEnd),
          scripts_loaded: Math.round(Math.max(...scripts.map(r => r.responseEnd))),
          jobs_request: [Math.round(jobs.startTime), Math.round(jobs.responseEnd)]};
}"""


def test_first_render_of_the_job_list_with_1000_jobs(page: Page, sqlite_stack: Stack) -> None:
    tenant_id, key = tenant_key(sqlite_stack)
    add_jobs(sqlite_stack, tenant_id, 1000)
    sign_in(page, key, "/console/jobs")
    expect(page.locator("table.jobs tbody tr")).to_have_count(50)
    drawn = []
    for _ in range(5):  # the best of five loads
        page.reload()
        expect(page.locator("table.jobs tbody tr")).to_have_count(50)
        drawn.append(page.evaluate(
            "performance.getEntriesByName('console:jobs-drawn')[0].startTime"))
    print("the last load's parts (ms):", page.evaluate(BREAKDOWN))
    # The budget is 300 ms on an idle machine; a shared one stretches it by its load per core
    # (the figure measured, with the load, is printed for the README).
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    print(f"first render of /console/jobs with 1000 jobs: {sorted(drawn)} ms "
          f"(load per core {load:.1f})")
    assert min(drawn) < FIRST_RENDER_MS * max(1.0, load)


def test_a_job_page_follows_a_5_step_chain_live(page: Page, sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    sign_in(page, key)
    with sqlite_stack.client(key) as client:
        job_id = client.post("/v1/jobs", json={"intent": "debug.chain",
                                               "inputs": {"steps": 5, "delay": 0.7}}).json()[
            "job_id"]
    page.goto(f"/console/jobs/{job_id}")
    steps = page.locator("ol.timeline > li")
    expect(steps).to_have_count(5)
    # The timeline changes while the chain runs: a step seen running, later steps done
    expect(page.locator(".step[data-status='running']")).to_have_count(1)
    expect(page.locator(".step[data-index='4']")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#job-status")).to_have_text("succeeded")
    assert page.locator(".step[data-status='succeeded']").count() == 5
    expect(page.locator("ol.events")).to_contain_text("job_succeeded")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    # Each step's worker (host:pid/start), as the API names it
    with sqlite_stack.client(key) as client:
        workers = [step["worker"] for step in client.get(f"/v1/jobs/{job_id}").json()["steps"]]
    assert all(workers), workers
    for index, worker in enumerate(workers):
        expect(page.locator(f".step[data-index='{index}'] .worker")).to_have_text(worker)


def test_cancel_from_the_job_page_stops_a_running_sleep(page: Page, sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    sign_in(page, key)
    with sqlite_stack.client(key) as client:
        job_id = client.post("/v1/jobs", json={"intent": "debug.sleep",
                                               "inputs": {"seconds": 60}}).json()["job_id"]
        page.goto(f"/console/jobs/{job_id}")
        expect(page.locator(".step[data-index='0']")).to_have_attribute("data-status", "running")
        page.get_by_role("button", name="Cancel job").click()
        expect(page.locator("#job-status")).to_have_text("cancelled")
        job = wait_job(client, job_id, timeout=20)
    assert job["status"] == "cancelled"
    assert job["steps"][0]["status"] != "succeeded"


def test_a_job_page_lists_its_callback_and_redelivers_it(page: Page, sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    with serve(reply(200)) as hook, sqlite_stack.client(key) as client:
        job_id = client.post("/v1/jobs", json={"intent": "debug.echo", "inputs": {"x": 1},
                                               "callback_url": f"{hook.url}/done"}).json()["job_id"]
        sign_in(page, key, f"/console/jobs/{job_id}")
        delivery = page.locator("ul.deliveries li")
        expect(delivery).to_contain_text(f"{hook.url}/done")
        expect(delivery.locator(".badge")).to_have_text("succeeded")
        # When Redeliver is pressed, the receiver gets the same delivery again
        delivery.get_by_role("button", name="Redeliver").click()
        expect(delivery).to_contain_text("attempts 2")  # counted when the attempt starts
        deadline = time.monotonic() + 10
        while len(hook.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(hook.received) == 2
        assert hook.received[0].headers["webhook-id"] == hook.received[1].headers["webhook-id"]


# --- registry ----------------------------------------------------------------------------------


def test_an_http_tool_is_registered_from_the_form_listed_as_an_intent_and_deleted(
        page: Page, sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    sign_in(page, key, "/console/registry")
    form = page.get_by_role("form", name="Register an HTTP tool")
    # A private URL is refused with the API's own reason
    form.get_by_label("Tool name").fill("weather")
    form.get_by_label("URL").fill("http://10.1.2.3/forecast")
    form.get_by_role("button", name="Register tool").click()
    with sqlite_stack.client(key) as client:
        reason = client.post("/v1/tools/register", json={
            "name": "weather", "url": "http://10.1.2.3/forecast"}).json()["error"]
    expect(form.get_by_role("alert")).to_have_text(reason)
    # A public one is registered and becomes an intent
    form.get_by_label("URL").fill("https://api.example.com/forecast/{city}")
    form.get_by_role("button", name="Register tool").click()
    expect(form).to_contain_text("Registered tool.weather")
    expect(page.locator("tr[data-intent='tool.weather']")).to_be_visible()
    # Deleted, it leaves the intents
    page.get_by_role("button", name="Delete weather").click()
    expect(page.locator("tr[data-intent='tool.weather']")).to_have_count(0)


def test_an_agent_is_registered_from_the_form_its_health_shown_and_deleted(
        page: Page, sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    sign_in(page, key, "/console/registry")
    form = page.get_by_role("form", name="Register an agent")
    with agent_server.serve() as agent:
        # An endpoint that does not answer its health check is refused with the API's reason
        form.get_by_label("Agent id").fill("helper")
        form.get_by_label("Agent name").fill("Helper")
        form.get_by_label("Endpoint").fill(f"{agent.url}/nowhere")
        form.get_by_role("button", name="Register agent").click()
        expect(form.get_by_role("alert")).to_contain_text("GET /health answered 404")
        # A live one is registered, becomes an intent and shows healthy
        form.get_by_label("Endpoint").fill(agent.url)
        form.get_by_role("button", name="Register agent").click()
        row = page.locator("li[data-agent='helper']")
        expect(row.locator(".health")).to_have_text("healthy")
        expect(page.locator("tr[data-intent='agent.helper']")).to_be_visible()
        with sqlite_stack.client() as stranger:  # another tenant has no such agent
            assert stranger.get("/v1/agents/helper/health").status_code == 404
    # Its server gone, the page shows it unhealthy
    page.reload()
    expect(row.locator(".health")).to_contain_text("unhealthy")
    # Deleted, it leaves the page and the API
    page.get_by_role("button", name="Delete helper").click()
    expect(row).to_have_count(0)
    expect(page.locator("tr[data-intent='agent.helper']")).to_have_count(0)
    with sqlite_stack.client(key) as client:
        assert client.get("/v1/agents").json() == []


def open_breaker(stack: Stack, name: str) -> None:
    """Open the breaker `name` in the stack's Redis, as failing calls would."""
    breakers = Breakers(redis.Redis.from_url(stack.env["REDIS_URL"]),
                        BreakerSettings(fail_max=1, reset_timeout=600))

    def fail() -> None:
        raise UpstreamError(name, "down for the test", status=503)

    with pytest.raises(UpstreamError):
        breakers.call(name, fail)
    assert [b["state"] for b in breakers.states() if b["name"] == name] == ["open"]


def test_breakers_are_reset_from_the_page_where_allowed(page: Page, sqlite_stack: Stack) -> None:
    tenant_id, key = tenant_key(sqlite_stack)
    own = f"http:{tenant_id}:127.0.0.1:9"
    shared = f"console-shared-{uuid.uuid4().hex[:6]}"
    open_breaker(sqlite_stack, own)
    open_breaker(sqlite_stack, shared)
    sign_in(page, key, "/console/registry")
    # A tenant resets its own host's breaker; a shared one has no Reset for it, nor metrics
    mine, theirs = page.locator(f"tr[data-breaker='{own}']"), page.locator(
        f"tr[data-breaker='{shared}']")
    expect(theirs.locator(".badge")).to_have_text("open")
    expect(theirs.get_by_role("button")).to_have_count(0)
    expect(page.locator(".operator")).not_to_contain_text("/metrics")
    mine.get_by_role("button", name=f"Reset {own}").click()
    expect(mine.locator(".badge")).to_have_text("closed")
    # An operator sees the metrics and resets the shared one
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").fill(sqlite_stack.new_key(operator=True))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Registry").click()
    expect(page.locator(".operator")).to_contain_text("/metrics")
    theirs.get_by_role("button", name=f"Reset {shared}").click()
    expect(theirs.locator(".badge")).to_have_text("closed")
    with sqlite_stack.client(key) as client:
        states = {b["name"]: b["state"] for b in client.get("/v1/breakers").json()}
    assert states[own] == states[shared] == "closed"


def test_memory_search_shows_each_signals_rank(page: Page, sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    with sqlite_stack.client(key) as client:
        written = client.post("/v1/jobs", json={"intent": "memory.write", "wait": True, "inputs": {
            "namespace": "notes", "text": "the backup runs at 2am"}}).json()
        wait_job(client, written["job_id"])
    sign_in(page, key, "/console/registry")
    search = page.get_by_role("search")
    search.get_by_label("Namespace").select_option("notes")
    search.get_by_label("Search memory").fill("backup")
    search.get_by_role("button", name="Search").click()
    result = search.locator(".memory-results li").first
    expect(result).to_contain_text("the backup runs at 2am")
    expect(result).to_contain_text("keyword #1")
    expect(result).to_contain_text("semantic #1")


# --- the chat socket's auth message, small screens, nothing off-host ------------------------


def test_the_chat_socket_takes_its_key_from_a_first_auth_message(sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    url = sqlite_stack.url.replace("http://", "ws://") + "/v1/chat/ws"
    with connect(url) as socket:
        socket.send(json.dumps({"type": "auth", "api_key": key}))
        assert json.loads(socket.recv(timeout=10)) == {"type": "authenticated"}
    with connect(url) as socket:
        socket.send(json.dumps({"type": "auth", "api_key": "wrong"}))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_readable_on_a_phone(phone: Page, sqlite_stack: Stack) -> None:
    _, key = tenant_key(sqlite_stack)
    sign_in(phone, key, "/console/inbox")
    expect(phone.get_by_role("heading", name="Inbox")).to_be_visible()
    # Nothing is wider than the screen
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide"
    # And the keyboard reaches the skip link first, then the console's links
    phone.reload()
    expect(phone.get_by_role("heading", name="Inbox")).to_be_visible()
    focused = []
    for _ in range(3):
        phone.keyboard.press("Tab")
        focused.append(phone.evaluate("document.activeElement.textContent"))
    assert focused == ["Skip to content", "Orchestrator", "Jobs"]


def test_no_page_sent_a_request_off_host(off_host: list[str]) -> None:
    # Runs last in the module: every page above was watched (`_context`)
    assert off_host == []
