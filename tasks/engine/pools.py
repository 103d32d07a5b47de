"""Worker pools: one queue each, with the execution pool and prefetch that suit their work."""

from dataclasses import dataclass

from core.models import PoolName


@dataclass(frozen=True)
class Pool:
    """A named worker pool: its queue, Celery execution pool, prefetch and what it runs.

    Pools whose steps wait on the network run threads (concurrency in the hundreds);
    CPU-bound ones run prefork processes.
    """

    name: PoolName
    execution: str
    prefetch: int
    description: str

    @property
    def queue(self) -> str:
        return self.name


POOLS: dict[str, Pool] = {
    pool.name: pool
    for pool in (
        Pool(PoolName.llm, "threads", 1, "LLM planning and responses (long calls)"),
        Pool(PoolName.tools, "threads", 1, "SSH, HTTP and MCP tool calls, debug intents"),
        Pool(PoolName.memory, "prefork", 4, "embedding and memory search"),
        Pool(PoolName.flow, "threads", 1, "n8n / ActivePieces webhooks and external agents"),
        Pool(PoolName.callbacks, "threads", 1, "signed callback delivery"),
    )
}
