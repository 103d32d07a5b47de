"""Admitting a step under its concurrency limit at start, and freeing its slot at the end.

The ledger asks `Admission` (within the transaction that would start the step) whether the
step may start; a step over its limit is throttled there and waits in the limit's queue. When
the step ends, however it ends, its slot is released and the waiting steps that now fit are
offered again through the normal hand-off.
"""

import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from sqlmodel import Session

from core.store.ledger import Ledger
from core.store.limits import Rule, concurrency_rule
from core.store.tables import Handoff, NextStep
from tasks.engine import slots
from tasks.engine.chain import hand_off
from tasks.engine.resources import Resources

log = logging.getLogger(__name__)


@dataclass
class Admission:
    """One delivery's admission: the slot it took, if any, to release when the step ends."""

    rt: Resources
    taken: Rule | None = None

    def __call__(self, session: Session, at: Ledger) -> dict[str, Any] | None:
        """None: the step may start (holding a slot of its limit, if it has one); else what
        the `step_throttled` event says about the limit."""
        row = at.row
        rule = concurrency_rule(session=session, tenant_id=row.tenant_id, intent=row.intent,
                                defaults=self.rt.settings.limits.concurrency,
                                own=row.limited)
        if rule is None:
            return None
        step = NextStep(at.job_id, at.index, row.intent, row.pool)
        taken = slots.take(self.rt.redis, rule, step, self.rt.runner)
        if taken.granted:
            self.taken = rule
            return None
        return {"intent": row.intent, "limit": rule.pattern, "max_running": rule.max_running,
                "running": taken.held}

    def release(self, app: Celery, job_id: str, index: int) -> None:
        """Free the slot this delivery took (if any) and offer the waiting steps that fit."""
        if self.taken is None:
            return
        key, self.taken = self.taken.key, None
        free_slot(app, self.rt.redis, key, job_id, index)


def free_slot(app: Celery, client: redis.Redis, key: str, job_id: str = "",
              index: int = 0) -> int:
    """Release a step's slot of limit `key` (none: only look for room) and offer again the
    waiting steps that fit; returns how many were offered. A failure is left to the sweeper,
    which reclaims dead runners' slots and offers queued steps whenever a limit has room."""
    try:
        offered = slots.release(client, key, job_id, index)
        for step in offered:
            hand_off(app, client, Handoff(send=step))
    except (OperationalError, redis.RedisError, OSError) as exc:
        log.warning("slot of %s/%d: release or re-offer failed (%s); the sweeper will",
                    job_id, index, type(exc).__name__)
        return 0
    return len(offered)
