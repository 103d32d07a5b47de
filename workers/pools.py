"""Worker pools: one queue each, with the prefetch that suits their work."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Pool:
    """A named worker pool: its queue, prefetch and what it runs."""

    name: str
    prefetch: int
    description: str

    @property
    def queue(self) -> str:
        return self.name


POOLS: dict[str, Pool] = {
    pool.name: pool
    for pool in (
        Pool("llm", 1, "LLM planning and responses (long calls)"),
        Pool("tools", 1, "SSH and tool execution, debug intents"),
        Pool("memory", 4, "embedding and memory search"),
        Pool("flow", 1, "n8n / ActivePieces webhooks and MCP tool calls"),
        Pool("callbacks", 4, "signed callback delivery"),
    )
}
