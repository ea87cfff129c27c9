"""The served OpenAPI document is correct: schemathesis (its CLI, bounded) finds no 5xx and no
response that breaks the documented schema, and real product events match the documented schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator
from test_gateway_support import KEYS, auth, build_runtime, running, sse_events, write_stack

ST = Path(sys.executable).parent / "st"
#: examples per operation: 5 found none of the NaN / deep-nesting / Last-Event-ID 500s; CI sets more
EXAMPLES = os.environ.get("KEEL_SCHEMATHESIS_EXAMPLES", "25")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    runtime, _ = build_runtime(write_stack(tmp_path_factory.mktemp("stack"), max_body=1_000_000))
    with running(runtime) as base:
        yield base


def test_schemathesis_finds_no_failure(url: str, tmp_path: Path) -> None:
    command = [
        str(ST), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", EXAMPLES, "--workers", "1",
        "--header", f"Authorization: Bearer {KEYS['acme']}", "--request-timeout", "5", "--seed", "1",
        "--generation-database", "none", "--no-color",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "Stateful" in result.stdout


def test_product_events_match_the_documented_schema(url: str) -> None:
    doc = httpx.get(f"{url}/openapi.json").json()
    schema = {**doc["components"]["schemas"]["ProductEvent"], "components": doc["components"]}
    validator = Draft202012Validator(schema)
    headers = auth(KEYS["acme"])
    done = httpx.post(f"{url}/v1/runnables/brief/executions?wait=true", json="cats", headers=headers, timeout=30).json()
    body = httpx.get(f"{url}/v1/executions/{done['id']}/events", headers=headers, timeout=30).text
    events = [json.loads(f["data"]) for f in sse_events(body)]
    assert len(events) > 3
    for event in events:
        assert not list(validator.iter_errors(event)), event
    stream = doc["paths"]["/v1/executions/{execution_id}/events"]["get"]["responses"]["200"]["content"][
        "text/event-stream"
    ]
    assert stream["schema"]["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/ProductEvent"}
