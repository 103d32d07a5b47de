"""Schemathesis over the whole API as two tenants: no server error, no undocumented answer."""

import json
import subprocess
from pathlib import Path

from tests import services
from tests.integration.conftest import Stack

CONFIG = Path(__file__).parents[1] / "schemathesis.toml"


def test_generated_requests_find_no_server_error_nor_undocumented_answer(
        stack: Stack, tmp_path: Path) -> None:
    # Given two tenants' keys in a Web Fuzzing Commons auth file
    auth = {"auth": [{"name": name, "fixedHeaders": [
        {"name": "Authorization", "value": f"Bearer {stack.new_key()}"}]}
        for name in ("tenant-a", "tenant-b")]}
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    # When schemathesis runs every check over every operation, a few examples each
    done = subprocess.run(
        [str(services.BIN / "schemathesis"), "--config-file", str(CONFIG), "run",
         f"{stack.url}/openapi.json", "--checks", "all", "--max-examples", "10",
         "--workers", "1", "--seed", "1"],
        env={**stack.env, "SCHEMATHESIS_AUTH": str(tmp_path / "auth.json")},
        capture_output=True, text=True, timeout=110, cwd=tmp_path)
    # Then it finds nothing
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
