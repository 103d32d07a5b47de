"""Schemathesis over the whole API as two tenants and a read-only key: no server error, no
undocumented answer."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from core.models import Scope
from tests import services
from tests.integration.conftest import Stack

CONFIG = Path(__file__).parents[1] / "schemathesis.toml"
# `make test` runs a few examples per operation; the run is 400 (README, "Tests"):
#   SCHEMATHESIS_EXAMPLES=400 pytest tests/integration/test_schemathesis.py
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
# Optionally only these operations (comma-separated operationIds), for a long run on a few.
OPERATIONS = [o for o in os.environ.get("SCHEMATHESIS_OPERATIONS", "").split(",") if o]


@pytest.mark.timeout(480 * max(1, EXAMPLES // 10))
def test_generated_requests_find_no_server_error_nor_undocumented_answer(
        stack: Stack, tmp_path: Path) -> None:
    # Given a read-only key of one tenant, a key of it with every tenant scope, and another
    # tenant's, in a Web Fuzzing Commons auth file (schemathesis tries them in this order for
    # each operation, moving on from the one it refuses with 403)
    first = f"t-{uuid.uuid4().hex[:8]}"
    keys = {"tenant-a-read-only": stack.new_key(tenant=first, scopes={Scope.jobs_read}),
            "tenant-a": stack.new_key(tenant=first), "tenant-b": stack.new_key()}
    auth = {"auth": [{"name": name, "fixedHeaders": [
        {"name": "Authorization", "value": f"Bearer {key}"}]} for name, key in keys.items()]}
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    # When schemathesis runs every check over every operation, EXAMPLES examples each
    # (a subset leaves out the operations its links lead to: no stateful phase then)
    only = [arg for o in OPERATIONS for arg in ("--include-operation-id", o)]
    if only:
        only.append("--phases=examples,coverage,fuzzing")
    done = subprocess.run(
        [str(services.BIN / "schemathesis"), "--config-file", str(CONFIG), "run",
         f"{stack.url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
         "--workers", "1", "--seed", "1", *only],
        env={**stack.env, "SCHEMATHESIS_AUTH": str(tmp_path / "auth.json")},
        capture_output=True, text=True, timeout=470 * max(1, EXAMPLES // 10), cwd=tmp_path)
    # Then it finds nothing
    assert done.returncode == 0, done.stdout[-30000:] + done.stderr[-2000:]
