"""Tasks of the `tools` pool."""

from typing import Any

from celery.exceptions import Ignore

from tasks import debug
from tasks.base import StepTask
from workers.app import celery_app
from workers.cancellation import is_cancelled
from workers.runtime import runtime


@celery_app.task(base=StepTask, name="tasks.tools.echo")
def echo(job_id: str, index: int, inputs: dict[str, Any]) -> dict[str, Any]:
    return debug.echo(inputs)


@celery_app.task(base=StepTask, name="tasks.tools.sleep")
def sleep(job_id: str, index: int, inputs: dict[str, Any]) -> dict[str, Any]:
    result = debug.sleep(float(inputs["seconds"]),
                         cancelled=lambda: is_cancelled(runtime().redis, job_id))
    if result["cancelled"]:
        raise Ignore("job cancelled")
    return result


@celery_app.task(base=StepTask, name="tasks.tools.chain_link")
def chain_link(job_id: str, index: int, inputs: dict[str, Any]) -> dict[str, Any]:
    return debug.chain_link(int(inputs["step"]), int(inputs["of"]), float(inputs["delay"]))


@celery_app.task(base=StepTask, name="tasks.tools.fail")
def fail(job_id: str, index: int, inputs: dict[str, Any]) -> None:
    debug.fail(str(inputs["message"]), inputs.get("unavailable_upstream"),
               float(inputs.get("retry_after", 1.0)))
