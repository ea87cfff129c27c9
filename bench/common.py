"""Workload data shared by the figure scripts: the 10-field output contract and its answer, and the
local fake OpenAI-compatible server as a context manager."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

# The 10-field contract every agent/model figure asks for, as (type name, description).
FIELDS: dict[str, tuple[str, str]] = {
    "title": ("str", "a short title"),
    "summary": ("str", "one sentence"),
    "category": ("str", "one word"),
    "priority": ("int", "1 to 5"),
    "score": ("float", "0 to 1"),
    "tags": ("list[str]", "keywords"),
    "author": ("str", "who wrote it"),
    "published": ("bool", "is it public"),
    "language": ("str", "ISO code"),
    "word_count": ("int", "words in the text"),
}
ANSWER: dict[str, Any] = {
    "title": "Quarterly report",
    "summary": "Revenue grew in every region while costs stayed flat.",
    "category": "finance",
    "priority": 2,
    "score": 0.87,
    "tags": ["revenue", "costs", "regions"],
    "author": "Ada Lovelace",
    "published": True,
    "language": "en",
    "word_count": 1234,
}
PROMPT = "Summarise this report: revenue grew in every region while costs stayed flat."

# Pydantic source of the contract, for snippets that run in a peer's venv (each defines it itself).
MODEL_SOURCE = """
from pydantic import BaseModel
class Report(BaseModel):
    title: str
    summary: str
    category: str
    priority: int
    score: float
    tags: list[str]
    author: str
    published: bool
    language: str
    word_count: int
"""


def big_answer(size: int = 20_000) -> str:
    """A JSON answer of about ``size`` characters: nested objects, lists, strings with escapes, numbers."""
    items = []
    i = 0
    while True:
        items.append(
            {
                "id": i,
                "title": f'Item {i}: a "quoted" title with unicode é and a newline\\n',
                "score": round(i * 0.137, 3),
                "tags": ["alpha", "beta", f"t{i}"],
                "done": i % 2 == 0,
                "owner": {"name": f"user{i}", "email": f"user{i}@example.com"},
            }
        )
        i += 1
        text = json.dumps({"report": "instant stream benchmark", "count": i, "items": items})
        if len(text) >= size:
            return text


@contextlib.contextmanager
def fake_openai_server(answer: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Start ``bench/fake_openai.py`` on 127.0.0.1 (a free port) for the duration; yield the args
    workloads need: ``base_url`` and ``stats_url``."""
    env_answer = json.dumps(answer if answer is not None else ANSWER)
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "fake_openai.py"), "--port", "0", "--answer", env_answer],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # "listening http://127.0.0.1:PORT"
        if not line.startswith("listening "):
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        root = line.split(" ", 1)[1]
        yield {"base_url": root + "/v1", "stats_url": root + "/_stats", "answer": answer or ANSWER}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_stats(stats_url: str) -> dict[str, float]:
    with urllib.request.urlopen(stats_url, timeout=5) as resp:
        return dict(json.loads(resp.read()))


# The disk's floor for durable writes: one 300-byte pwrite + fdatasync on a preallocated file in a
# temp folder (the same disk the store figures use). No store can acknowledge a durable write in less;
# ``ARGS["per_flush"]`` records sharing one flush (perfect group commit) divide it.
FLUSH_FLOOR = """
import os, tempfile
n, per_flush = ARGS.get("floor_n", 2000), ARGS.get("per_flush", 1)
folder = tempfile.mkdtemp()
fd = os.open(os.path.join(folder, "floor"), os.O_RDWR | os.O_CREAT)
os.posix_fallocate(fd, 0, n * 512)
os.fsync(fd)
record = b"x" * 300
t0 = _time.perf_counter()
for i in range(n):
    os.pwrite(fd, record, i * 512)
    os.fdatasync(fd)
elapsed = _time.perf_counter() - t0
os.close(fd)
emit(elapsed * 1e6 / n / per_flush)
"""


def flush_floor_side(per_flush: int = 1) -> Any:
    """A reference side (not a peer): the disk's flush time, per record when ``per_flush`` share one."""
    from harness import Side

    shared = f", shared by {per_flush} records" if per_flush > 1 else ""
    return Side(
        "disk flush",
        "keel",
        code=FLUSH_FLOOR,
        how=f"one 300-byte pwrite + fdatasync on a preallocated file, same disk{shared}: "
        "no durable acknowledged write can take less",
        reference=True,
    )
