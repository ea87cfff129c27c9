"""Figure 1, start-up: a cold ``keel plugins`` against importing each peer, fresh process each round.

Workload: ``.venv/bin/keel plugins`` (the workspace venv, every first-party plugin installed, with
``KEEL_STRICT_PLUGINS=1`` so a broken plugin fails the round instead of being skipped) against
``python -c "import agently"``, ``python -c "import langgraph.graph"`` and ``python -c "import
pydantic_ai"``, each in its own pinned venv. Wall clock from ``subprocess.run`` to exit, in ms.

Unfair in Keel's disfavour: ``keel plugins`` discovers and loads every plugin and prints a table,
while each peer only imports its package. ``python -c pass`` (the bare interpreter in the workspace
venv) is listed as a floor for reading the numbers; no rule uses it.

Target (issue 2): under 300 ms and faster than both agently and langgraph.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Figure, Side, faster_than, keel_below, main_for

ROUNDS = 15  # ~4 s per round for all sides on 2 cores: about a minute


def figures() -> list[Figure]:
    return [
        Figure(
            figure="startup",
            group="1. startup",
            title="cold `keel plugins` vs importing each peer",
            unit="ms",
            target="under 300 ms and faster than both agently and langgraph (issue 2)",
            rules=[keel_below(300.0), faster_than("agently"), faster_than("langgraph")],
            rounds=ROUNDS,
            warmup=1,
            sides=[
                Side(
                    "keel",
                    "keel",
                    argv=["{bin}/keel", "plugins"],
                    env={"KEEL_STRICT_PLUGINS": "1"},
                    how="`.venv/bin/keel plugins`, KEEL_STRICT_PLUGINS=1, all first-party plugins installed",
                ),
                Side(
                    "agently", "agently", argv=["{python}", "-c", "import agently"], how='`python -c "import agently"`'
                ),
                Side(
                    "langgraph",
                    "langgraph",
                    argv=["{python}", "-c", "import langgraph.graph"],
                    how='`python -c "import langgraph.graph"`',
                ),
                Side(
                    "pydantic_ai",
                    "pydantic_ai",
                    argv=["{python}", "-c", "import pydantic_ai"],
                    how='`python -c "import pydantic_ai"`',
                ),
                Side(
                    "python -c pass",
                    "keel",
                    argv=["{python}", "-c", "pass"],
                    how="the bare interpreter, a floor; not a peer",
                    reference=True,
                ),
            ],
            notes=[
                "warm-up: one round of every side before measuring (fills the OS page cache; "
                "`cold` here means a fresh interpreter process, not a cold disk cache)",
                "bytecode: every side runs with PYTHONDONTWRITEBYTECODE unset, so the warm-up writes each "
                "package's __pycache__ as any installed package has it; compiling every source again each "
                "round measured the compiler, not the import",
            ],
        )
    ]


def main() -> None:
    main_for(figures)


if __name__ == "__main__":
    main()
