"""ContextPack: a bounded context for a prompt, built from a workspace.

Entries are chosen newest first, filtered by kind and tags, until the token budget is spent; an
entry that does not fit is left out (and counted), and older, smaller ones may still fill the rest.
The chosen entries are rendered oldest first. Artifacts enter as their refs (name, type, size, hash),
never as their bytes, so large evidence never enters the prompt whole.

Token estimate: ``ceil(characters / 4)``, about four characters per token for English text with
common tokenizers. It is deliberately simple and errs on neither side by much; leave headroom.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel_workspace.workspace import Kind, Workspace, select

__all__ = ["ContextPack", "PackedItem", "estimate_tokens", "render_entry"]


def estimate_tokens(text: str) -> int:
    """About four characters per token: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / 4)


def render_entry(entry: Any) -> str:
    """One entry as a line of prompt text."""
    tags = f" #{' #'.join(entry.tags)}" if entry.tags else ""
    if entry.kind == "observation":
        source = f" from {entry.source}" if entry.source else ""
        return f"[observation{source}{tags}] {entry.content}"
    if entry.kind == "artifact":
        about = f": {entry.description}" if entry.description else ""
        return f"[artifact{tags}] {entry.ref}{about}"
    if entry.kind == "decision":
        why = f" because {entry.why}" if entry.why else ""
        refs = [e[:19] if e.startswith("sha256:") else e for e in entry.evidence]  # a short hash is enough here
        evidence = f" (evidence: {', '.join(refs)})" if refs else ""
        return f"[decision by {entry.by}{tags}] {entry.what}{why}{evidence}"
    return f"[checkpoint{tags}] {entry.name} v{entry.version} ({entry.size:,} bytes of state)"


class PackedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    scope: str
    text: str
    tokens: int


class ContextPack(BaseModel):
    """What :meth:`build` chose, what it cost, and how much it left out."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    budget_tokens: int
    tokens: int = 0
    items: list[PackedItem] = Field(default_factory=list)
    left_out: int = Field(default=0, description="entries that matched but did not fit the budget")
    left_out_by_kind: dict[str, int] = Field(default_factory=dict)
    filtered_out: int = Field(default=0, description="entries that did not match the kinds or tags")

    @classmethod
    async def build(
        cls,
        workspace: Workspace,
        *,
        budget_tokens: int = 2000,
        kinds: Iterable[Kind] | None = None,
        tags: Iterable[str] | None = None,
        include_children: bool = False,
    ) -> ContextPack:
        """Choose entries newest first within ``budget_tokens`` (see the module docstring)."""
        if budget_tokens < 1:
            raise ValueError("budget_tokens must be at least 1")
        everything = await workspace.entries(include_children=include_children)
        matching = select(everything, kinds=kinds, tags=tags)
        pack = cls(scope=workspace.scope, budget_tokens=budget_tokens, filtered_out=len(everything) - len(matching))
        chosen: list[PackedItem] = []
        for entry in reversed(matching):
            text = render_entry(entry)
            tokens = estimate_tokens(text)
            if pack.tokens + tokens > budget_tokens:
                pack.left_out += 1
                pack.left_out_by_kind[entry.kind] = pack.left_out_by_kind.get(entry.kind, 0) + 1
                continue
            pack.tokens += tokens
            chosen.append(PackedItem(id=entry.id, kind=entry.kind, scope=entry.scope, text=text, tokens=tokens))
        pack.items = chosen[::-1]
        return pack

    def render(self) -> str:
        """The chosen entries, oldest first, one per line, with a note of what was left out."""
        lines = [item.text for item in self.items]
        if self.left_out:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.left_out_by_kind.items()))
            lines.append(f"({self.left_out} more workspace entries left out to fit the budget: {kinds})")
        return "\n".join(lines)
