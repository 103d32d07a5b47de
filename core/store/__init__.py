"""The job store: keyword-only functions on a session, one transaction each.

Split along its seams: tenants, submission, the step ledger and its waits, events, queries
and recovery. Import the functions from here.
"""

from core.store.agents import delete_agent, list_agents, register_agent
from core.store.events import append_events
from core.store.ledger import (
    StepStart,
    StepVerdict,
    begin_step,
    fail_step,
    finish_step,
    retry_step,
)
from core.store.queries import (
    WAITING_STEPS,
    cancel_job,
    get_job,
    job_steps,
    list_events,
    list_jobs,
    pending_action,
)
from core.store.recovery import (
    Orphan,
    expired_steps,
    quiet_jobs,
    requeue_held,
    requeue_orphan,
    resume,
    running_steps,
)
from core.store.submission import discard_submission, submit_job
from core.store.tables import (
    Handoff,
    NewStep,
    NextStep,
    new_job_id,
    new_token,
    step_task_id,
)
from core.store.tenants import (
    create_tenant_key,
    hash_key,
    is_operator,
    key_owner,
    tenant_for_key,
)
from core.store.tools import delete_tool, list_tools, save_tool
from core.store.waits import (
    approve_step,
    expire_step,
    hold_step,
    issue_resume_token,
    reject_step,
    resume_step,
    wait_step,
)

__all__ = [
    "WAITING_STEPS", "Handoff", "NewStep", "NextStep", "Orphan", "StepStart", "StepVerdict",
    "append_events", "delete_agent", "list_agents", "register_agent",
    "delete_tool", "list_tools", "save_tool",
    "approve_step", "begin_step", "cancel_job", "create_tenant_key", "discard_submission",
    "expire_step", "expired_steps", "fail_step", "finish_step", "get_job", "hash_key",
    "hold_step", "is_operator", "issue_resume_token", "job_steps", "key_owner", "list_events",
    "list_jobs",
    "new_job_id", "new_token", "pending_action", "quiet_jobs", "reject_step", "requeue_held",
    "requeue_orphan", "resume", "resume_step", "retry_step", "running_steps", "step_task_id",
    "submit_job", "tenant_for_key", "wait_step",
]
