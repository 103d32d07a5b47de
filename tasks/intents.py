"""The built-in intents (a static provider), flows, MCP tools, agents and tenants' HTTP tools,
added to the engine's registry when this module is imported (the API imports it; a worker
through the Celery app's `include`)."""

from core.models import Effect, PoolName
from tasks import debug, llm, memory, ssh, tools
from tasks.agents import AgentProvider
from tasks.engine.registry import REGISTRY, Intent, StaticProvider
from tasks.flows import FlowProvider
from tasks.mcp import McpProvider

__all__ = ["BUILTIN", "REGISTRY", "TOOLS"]

BUILTIN = StaticProvider()
for _intent in (
    Intent("debug.echo", PoolName.tools, "agent", debug.EchoInputs,
           "Return the inputs unchanged.", debug.echo),
    Intent("debug.sleep", PoolName.tools, "agent", debug.SleepInputs,
           "Sleep for `seconds`; cancellable while it sleeps.", debug.sleep),
    Intent("debug.fail", PoolName.tools, "agent", debug.FailInputs,
           "Fail with `message`: for testing failure handling and callbacks.", debug.fail),
    Intent("debug.chain", PoolName.tools, "agent", debug.ChainInputs,
           "A static chain of `steps` steps, each waiting `delay` seconds.", debug.planned_only,
           planner=debug.plan_chain),
    Intent("debug.chain.link", PoolName.tools, "agent", debug.LinkInputs,
           "One link of a `debug.chain`: waits `delay`, returns its place.", debug.chain_link,
           internal=True),
    Intent("debug.plan", PoolName.llm, "agent", debug.PlanInputs,
           "A planning step: appends `steps` to its own job when it runs, as the LLM planner "
           "does; their inputs may refer to earlier outputs with step references.", debug.plan,
           literal_inputs=True),
    Intent("debug.hold", PoolName.tools, "agent", debug.HoldInputs,
           "A step held until approved with its token (POST /v1/jobs/{id}/approve).",
           debug.approved, dangerous=True, approval=debug.hold_reason),
    Intent("debug.wait", PoolName.flow, "agent", debug.WaitInputs,
           "A step that waits until its resume URL is called (POST /v1/resume/{token}); "
           "the body becomes its output.", debug.wait),
    Intent("debug.crash", PoolName.memory, "agent", debug.CrashInputs,
           "Kill the worker process running it, to rehearse poison handling (only with "
           "ORCHESTRATOR_DEBUG_CRASH=true; otherwise it fails).", debug.crash),
    Intent("debug.http", PoolName.tools, "agent", debug.HttpInputs,
           "POST `body` to `url` once (through the SSRF guard) and return the answer.",
           debug.http),
    Intent("llm.plan", PoolName.llm, "agent", llm.PromptInputs,
           "Plan a free-text prompt into steps with the model (or the rule-based planner "
           "without one), then answer with `llm.respond`. What `prompt` submits.", llm.plan,
           internal=True),
    Intent(llm.REVIEW_INTENT, PoolName.llm, "agent", llm.ReviewInputs,
           "Hold a prompt's whole plan for a person's review (`review: true`); once approved, "
           "the planned steps run.", llm.reviewed, dangerous=True, approval=llm.review_hold,
           literal_inputs=True, internal=True),
    Intent("llm.respond", PoolName.llm, "agent", llm.RespondInputs,
           "Answer a prompt from the outputs of its planned steps, streaming the text as "
           "`llm_delta` events.", llm.respond, internal=True),
    Intent("memory.write", PoolName.memory, "agent", memory.WriteInputs,
           "Remember `text` (or `items`) in a namespace, embedded for semantic search; the same "
           "text in the same namespace is the same item. Answers {item_id, status: stored}.",
           memory.write),
    Intent("memory.search", PoolName.memory, "agent", memory.SearchInputs,
           "Search a namespace by meaning and keywords (mode hybrid | semantic | keyword); "
           "answers {results: [{item_id, text, tags, score, scores, ...}]}.", memory.find,
           effect=Effect.read),
    Intent("memory.delete", PoolName.memory, "agent", memory.DeleteInputs,
           "Delete items by id.", memory.forget, destructive=True),
    Intent("http.request", PoolName.tools, "agent", tools.HttpRequestInputs,
           "One HTTP request to a public URL (through the SSRF guard, no redirects, the answer "
           "capped at HTTP_MAX_RESPONSE_BYTES, a breaker per host); returns status and body.",
           tools.http_request, effect_of=tools.request_effect),
):
    BUILTIN.register(_intent)

TOOLS = tools.ToolProvider()
for _provider in (BUILTIN, ssh.SshProvider(), FlowProvider(), AgentProvider(), McpProvider(),
                  TOOLS):
    REGISTRY.add(_provider)
