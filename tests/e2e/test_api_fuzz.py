"""Schemathesis over the served OpenAPI schema: whatever it generates, no 500."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tenant_server_process

pytestmark = pytest.mark.e2e


def test_generated_requests_never_get_a_server_error(tenant_dsn, tmp_path):
    with tenant_server_process(tenant_dsn, tmp_path, YGG_RATE_LIMIT_PER_SECOND="100000",
                               YGG_RATE_LIMIT_BURST="100000") as server:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json",
             "--checks", "not_a_server_error",
             "--header", f"Authorization: Bearer {server.admin_token}",
             "--max-examples", "30", "--seed", "20261203", "--workers", "1",
             "--request-timeout", "10", "--no-color", "--generation-allow-x00", "true"],
            capture_output=True, text=True, timeout=600,
        )
        output = result.stdout + result.stderr
        server_log = server.log_path.read_text()
    assert result.returncode == 0, output[-6000:] + "\n--- server log tail ---\n" + server_log[-4000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts, output[-3000:]
    generated, passed = map(int, counts.groups())
    assert generated > 500 and passed == generated
    assert '"status": 500' not in server_log
