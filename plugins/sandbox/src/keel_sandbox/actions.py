"""The sandbox's actions: ``run_python``, ``run_shell`` and ``run_node``, bound to one sandbox."""

from __future__ import annotations

from typing import Any

import keel
from keel_sandbox.config import Language
from keel_sandbox.runner import Sandbox

__all__ = ["sandbox_actions"]

_DOCS: dict[Language, str] = {
    "python": "Run a Python 3 script",
    "shell": "Run a POSIX shell script",
    "node": "Run a Node.js script",
}


def sandbox_actions(sandbox: Sandbox) -> list[keel.ActionSpec]:
    """One action per language the sandbox's config enables, named ``<prefix>run_<language>``.

    Each returns a :class:`keel_sandbox.RunResult` as a dict. A run that fails (non-zero exit,
    timeout, a limit hit) is still a result the model reads (``ok``, ``reason``, ``message``).
    """
    cfg = sandbox.config
    limits = (
        f"Limits: wall {cfg.wall_seconds}s, CPU {cfg.cpu_seconds}s, memory {cfg.memory_mb} MB, "
        f"{cfg.max_processes} processes, output {cfg.max_output_bytes} bytes per stream; network "
        + ("allowed." if cfg.network else "off.")
    )
    specs = []
    for language in cfg.languages:
        specs.append(_one(sandbox, language, limits))
    return specs


def _one(sandbox: Sandbox, language: Language, limits: str) -> keel.ActionSpec:
    cfg = sandbox.config

    async def run(code: str, stdin: str = "", files: dict[str, str] | None = None) -> dict[str, Any]:
        result = await sandbox.run_script(language, code, stdin=stdin, files=files)
        return result.model_dump(mode="json")

    description = (
        f"{_DOCS[language]} in a fresh, empty working folder that is deleted afterwards. "
        "`files` maps relative paths to text written into the folder first. Returns exit_code, "
        "stdout, stderr (truncated with a marker past the limit), reason, message and the files "
        f"the script produced. {limits}"
    )
    return keel.action(
        name=f"{cfg.prefix}run_{language}", description=description, risk=cfg.effective_risk(),
        tags=["sandbox"], visible_to=cfg.visible_to, timeout=cfg.wall_seconds + 30.0,
    )(run)  # fmt: skip
