"""The Workspace: what a task saw, produced and decided, kept in any :class:`keel.Store`.

Layout in the store (tenant-scoped, like every store call):

- ``workspace/<scope>``: the append-only log of one workspace's own entries;
- ``workspace/<root>/~shared``: entries every workspace of the topology reads (``visibility="shared"``);
- ``workspace/<root>/~role/<role>``: entries the workspaces of one role read (``visibility="role"``);
- key-value namespace ``workspace/<scope>``: checkpoint states, key ``checkpoint/<name>`` (versioned);
- blobs: artifact bytes, by sha256. Entries carry an :class:`ArtifactRef`, never the bytes.

A scope is a path: ``task-42`` for a task, ``task-42/research`` for a sub-flow's child workspace.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

import keel
from keel.store import Append, Put

__all__ = [
    "PREFIX",
    "ArtifactEntry",
    "ArtifactRef",
    "CheckpointEntry",
    "DecisionEntry",
    "Entry",
    "Kind",
    "Limits",
    "ObservationEntry",
    "TooLargeError",
    "Visibility",
    "Workspace",
    "check_small",
    "list_scopes",
    "select",
]

PREFIX = "workspace/"
Kind = Literal["observation", "artifact", "decision", "checkpoint"]
Visibility = Literal["own", "shared", "role"]
_SEGMENT = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class TooLargeError(keel.KeelError, ValueError):
    """Something too large was handed to state or a prompt: store it as an artifact and pass the ref."""

    code = "workspace.too_large"


class Limits(BaseModel):
    """Size thresholds, in bytes of UTF-8 JSON (text counts its UTF-8 bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_bytes: int = Field(default=8 * 1024, ge=1, description="an observation's content, a decision's fields")
    state_bytes: int = Field(default=16 * 1024, ge=1, description="a checkpoint's state")


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))


def check_small(value: Any, limit: int, what: str = "value") -> Any:
    """Refuse ``value`` if it is over ``limit`` bytes (as UTF-8 JSON); return it otherwise.

    Call it wherever something is about to enter execution state or a prompt::

        state["report"] = check_small(report, 16_384, "the report")
    """
    size = _size(value)
    if size > limit:
        raise TooLargeError(
            f"{what} is {size:,} bytes, over the {limit:,}-byte limit for state and prompts: store it as an "
            "artifact (ref = await workspace.put_artifact(data, name=...)) and pass the ArtifactRef instead"
        )
    return value


class ArtifactRef(BaseModel):
    """A reference to an artifact's bytes: what state, decisions and prompts carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str
    size: int
    media_type: str
    name: str

    def blob(self) -> keel.BlobRef:
        return keel.BlobRef(sha256=self.sha256, size=self.size, media_type=self.media_type)

    def __str__(self) -> str:
        return f"{self.name} ({self.media_type}, {self.size:,} bytes, sha256:{self.sha256[:12]})"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: keel.new_id("we"))
    scope: str
    role: str | None = None
    visibility: Visibility = "own"
    time: float = Field(default_factory=time.time)
    tags: list[str] = Field(default_factory=list)
    seq: int = Field(default=0, description="position in its stream; set when read back")


class ObservationEntry(_Entry):
    """What was seen, and where."""

    kind: Literal["observation"] = "observation"
    content: str
    source: str = ""


class ArtifactEntry(_Entry):
    """An artifact (file, download, report, log) stored as a blob."""

    kind: Literal["artifact"] = "artifact"
    ref: ArtifactRef
    description: str = ""


class DecisionEntry(_Entry):
    """What was decided, by whom, why, and from which evidence (entry ids or ``sha256:<hash>``)."""

    kind: Literal["decision"] = "decision"
    what: str
    by: str
    why: str = ""
    evidence: list[str] = Field(default_factory=list)


class CheckpointEntry(_Entry):
    """A named snapshot of small state was taken (the state itself is in the key-value space)."""

    kind: Literal["checkpoint"] = "checkpoint"
    name: str
    version: int
    size: int


Entry = Annotated[ObservationEntry | ArtifactEntry | DecisionEntry | CheckpointEntry, Field(discriminator="kind")]
_ENTRY: TypeAdapter[Any] = TypeAdapter(Entry)


def _check_scope(scope: str) -> str:
    parts = scope.split("/")
    if not all(_SEGMENT.match(p) for p in parts):
        raise keel.KeelError(
            f"workspace scope {scope!r} is invalid: use '/'-separated names of letters, digits and _.:@- "
            "(for example 'task-42' or 'task-42/research')"
        )
    return scope


class Workspace:
    """One workspace of a task or execution topology, over any :class:`keel.Store`.

    :param store: the store to keep everything in (usually ``runtime.store()``).
    :param scope: the workspace's name; children get ``<scope>/<name>``.
    :param tenant: the tenant every store call carries.
    :param role: the role this workspace acts as (reads and writes ``visibility="role"`` entries).
    :param limits: size thresholds for state and prompts.
    """

    def __init__(
        self,
        store: keel.Store,
        scope: str,
        *,
        tenant: str = "default",
        role: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.scope = _check_scope(scope)
        self.tenant = tenant
        self.role = role if role is None else _check_scope(role)
        self.limits = limits or Limits()

    def __repr__(self) -> str:
        role = f", role={self.role!r}" if self.role else ""
        return f"Workspace({self.scope!r}{role})"

    @property
    def root(self) -> str:
        return self.scope.split("/", 1)[0]

    def child(self, name: str, *, role: str | None = None) -> Workspace:
        """A child workspace for a sub-flow: its own entries, and the topology's shared ones."""
        return Workspace(
            self.store, f"{self.scope}/{_check_scope(name)}", tenant=self.tenant, role=role, limits=self.limits
        )

    def as_role(self, role: str) -> Workspace:
        """The same workspace acting as ``role``."""
        return Workspace(self.store, self.scope, tenant=self.tenant, role=role, limits=self.limits)

    # ------------------------------------------------------------------------------ streams

    def _stream(self, visibility: Visibility) -> str:
        if visibility == "shared":
            return f"{PREFIX}{self.root}/~shared"
        if visibility == "role":
            if not self.role:
                raise keel.KeelError(
                    f"{self!r} has no role: use workspace.as_role('name') before writing visibility='role'"
                )
            return f"{PREFIX}{self.root}/~role/{self.role}"
        return f"{PREFIX}{self.scope}"

    def _readable(self) -> list[str]:
        streams = [self._stream("own"), self._stream("shared")]
        if self.role:
            streams.append(self._stream("role"))
        return streams

    async def _add(self, entry: _Entry) -> Any:
        entry.seq = await self.store.append(
            self.tenant, self._stream(entry.visibility), [entry.model_dump(mode="json", exclude={"seq"})]
        )
        return entry

    def _common(self, tags: Iterable[str], visibility: Visibility) -> dict[str, Any]:
        return {"scope": self.scope, "role": self.role, "visibility": visibility, "tags": sorted(set(tags))}

    # ------------------------------------------------------------------------------ writing

    async def observe(
        self, content: str, *, source: str = "", tags: Iterable[str] = (), visibility: Visibility = "own"
    ) -> ObservationEntry:
        """Record what was seen. Content over ``limits.text_bytes`` is refused: store it as an artifact."""
        check_small(content, self.limits.text_bytes, "the observation's content")
        entry: ObservationEntry = await self._add(
            ObservationEntry(content=content, source=source, **self._common(tags, visibility))
        )
        return entry

    async def put_artifact(
        self,
        data: bytes | str,
        *,
        name: str,
        media_type: str | None = None,
        description: str = "",
        tags: Iterable[str] = (),
        visibility: Visibility = "own",
    ) -> ArtifactRef:
        """Store bytes (text is UTF-8 encoded) as a blob and record the artifact; returns its ref."""
        if isinstance(data, str):
            data = data.encode("utf-8")
            media_type = media_type or "text/plain; charset=utf-8"
        media_type = media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        check_small(description, self.limits.text_bytes, "the artifact's description")
        blob = await self.store.put_blob(self.tenant, data, media_type)
        ref = ArtifactRef(sha256=blob.sha256, size=blob.size, media_type=media_type, name=name)
        await self._add(ArtifactEntry(ref=ref, description=description, **self._common(tags, visibility)))
        return ref

    async def read_artifact(self, ref: ArtifactRef | str) -> bytes:
        """An artifact's bytes (by ref or sha256)."""
        return await self.store.get_blob(self.tenant, ref if isinstance(ref, str) else ref.sha256)

    async def open_artifact(self, ref: ArtifactRef | str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        """An artifact's bytes in chunks, for artifacts too large to hold twice."""
        async for chunk in self.store.stream_blob(self.tenant, ref if isinstance(ref, str) else ref.sha256, chunk_size):
            yield chunk

    async def decide(
        self,
        what: str,
        *,
        by: str,
        why: str = "",
        evidence: Sequence[Any] = (),
        tags: Iterable[str] = (),
        visibility: Visibility = "own",
    ) -> DecisionEntry:
        """Record a decision. ``evidence``: entries, artifact refs, or their ids as strings."""
        refs: list[str] = []
        for item in evidence:
            if isinstance(item, ArtifactRef):
                refs.append(f"sha256:{item.sha256}")
            elif isinstance(item, _Entry):
                refs.append(item.id)
            elif isinstance(item, str):
                refs.append(item)
            else:
                raise TypeError(f"evidence must be entries, ArtifactRefs or id strings, not {type(item).__name__}")
        check_small({"what": what, "why": why, "evidence": refs}, self.limits.text_bytes, "the decision")
        entry: DecisionEntry = await self._add(
            DecisionEntry(what=what, by=by, why=why, evidence=refs, **self._common(tags, visibility))
        )
        return entry

    async def checkpoint(
        self, name: str, state: Any, *, expected_version: int | None = None, tags: Iterable[str] = ()
    ) -> CheckpointEntry:
        """Save a named snapshot of SMALL state (JSON); over ``limits.state_bytes`` it is refused.

        ``expected_version`` makes the save a compare-and-set (0: the checkpoint must not exist yet).
        """
        _check_scope(name)
        check_small(state, self.limits.state_bytes, f"the state of checkpoint {name!r}")
        namespace, key = f"{PREFIX}{self.scope}", f"checkpoint/{name}"
        while True:
            # the state and its timeline entry in one transaction: a crash never keeps one without the other
            if expected_version is not None:
                current = expected_version
            else:
                item = await self.store.get(self.tenant, namespace, key)
                current = item.version if item is not None else 0
            entry = CheckpointEntry(name=name, version=current + 1, size=_size(state), **self._common(tags, "own"))
            try:
                _, entry.seq = await self.store.transact(
                    self.tenant,
                    [
                        Put(namespace, key, state, expected_version=current),
                        Append(self._stream("own"), [entry.model_dump(mode="json", exclude={"seq"})]),
                    ],
                )
            except keel.ConflictError:
                if expected_version is not None:
                    raise
                continue  # another writer saved it in between: save over the newer version
            return entry

    async def restore(self, name: str) -> Any:
        """The state of the named checkpoint, or :class:`keel.NotFoundError`."""
        item = await self.store.get(self.tenant, f"{PREFIX}{self.scope}", f"checkpoint/{name}")
        if item is None:
            raise keel.NotFoundError(f"{self!r} has no checkpoint {name!r}; it has: {await self.checkpoints()}")
        return item.value

    async def checkpoints(self) -> list[str]:
        keys = await self.store.list_keys(self.tenant, f"{PREFIX}{self.scope}", prefix="checkpoint/")
        return [k.removeprefix("checkpoint/") for k in keys]

    def check_small(self, value: Any, what: str = "value") -> Any:
        """:func:`check_small` with this workspace's state limit."""
        return check_small(value, self.limits.state_bytes, what)

    # ------------------------------------------------------------------------------ reading

    async def entries(
        self,
        *,
        kinds: Iterable[Kind] | None = None,
        tags: Iterable[str] | None = None,
        include_children: bool = False,
    ) -> list[Any]:
        """What this workspace can see (its own, the shared and its role's entries), oldest first.

        ``tags``: keep entries having at least one of them. ``include_children``: add the entries of
        every child workspace below this scope.
        """
        streams = self._readable()
        if include_children:
            below = await self.store.list_streams(self.tenant, prefix=f"{PREFIX}{self.scope}/")
            streams += [s for s in below if "/~" not in s]
        found: list[Any] = []
        for stream in streams:
            for record in await self.store.read(self.tenant, stream):
                found.append(_ENTRY.validate_python({**record.data, "seq": record.seq}))
        found.sort(key=lambda e: (e.time, e.id))
        return select(found, kinds=kinds, tags=tags)


def select(
    entries: Iterable[Any], *, kinds: Iterable[Kind] | None = None, tags: Iterable[str] | None = None
) -> list[Any]:
    """The entries of the given kinds having at least one of the given tags (``None``: any)."""
    wanted_kinds = set(kinds) if kinds is not None else None
    wanted_tags = set(tags) if tags is not None else None
    return [
        e
        for e in entries
        if (wanted_kinds is None or e.kind in wanted_kinds) and (wanted_tags is None or wanted_tags & set(e.tags))
    ]


async def list_scopes(store: keel.Store, tenant: str = "default") -> dict[str, int]:
    """Every workspace scope of a tenant with its number of own entries (shared/role logs under ``<root>/~``)."""
    scopes: dict[str, int] = {}
    for stream in await store.list_streams(tenant, prefix=PREFIX):
        scopes[stream.removeprefix(PREFIX)] = await store.last_seq(tenant, stream)
    return scopes
