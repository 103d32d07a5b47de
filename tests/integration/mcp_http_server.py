"""A streamable-HTTP MCP server on loopback, built with the SDK (`python -m ... PORT`)."""

import sys

import uvicorn
from mcp.server import MCPServer

server = MCPServer("orchestrator-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()


if __name__ == "__main__":
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="warning")
