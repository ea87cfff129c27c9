"""A sandbox's options (``SandboxConfig``): the keys of an ``[environments.<name>]`` table with
``driver = "sandbox"``. Cheap to import: the entry module names it as ``EnvironmentSpec.options``
so ``keel stack`` checks the table, while the runner loads only when a sandbox is built."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import keel

__all__ = ["LANGUAGES", "Language", "SandboxConfig"]

Language = Literal["python", "shell", "node"]
LANGUAGES: tuple[Language, ...] = ("python", "shell", "node")


class SandboxConfig(BaseModel):
    """A sandbox's permissions and limits: the keys of an ``[environments.<name>]`` table with
    ``driver = "sandbox"`` (the :class:`keel.Permissions` fields plus the sandbox's own)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use

    network: bool = Field(default=False, description="allow network access (otherwise a new, empty network namespace)")
    env: list[str] = Field(default_factory=list, description="host environment variable names passed through")
    cpu_seconds: float | None = Field(default=10.0, description="CPU time limit per process (RLIMIT_CPU)")
    memory_mb: int | None = Field(default=512, description="memory limit per process (address space)")
    wall_seconds: float = Field(default=30.0, gt=0, description="wall-clock limit of the whole run")
    read_paths: list[str] = Field(default_factory=list, description="not enforced: see the docs")
    write_paths: list[str] = Field(default_factory=list, description="must stay empty: runs write only to their folder")
    max_processes: int = Field(default=64, ge=1, description="processes of the run (RLIMIT_NPROC)")
    max_open_files: int = Field(default=256, ge=16, description="open file descriptors per process (RLIMIT_NOFILE)")
    max_output_bytes: int = Field(default=256 * 1024, ge=1024, description="kept of stdout and of stderr, each")
    max_file_mb: int = Field(default=64, ge=1, description="largest file a run may write (RLIMIT_FSIZE)")
    disk_mb: int = Field(
        default=256, ge=1, description="total size of everything a run writes (a tmpfs per run, when root)"
    )
    max_inodes: int = Field(default=10_000, ge=16, description="files and folders a run may create in all")
    unix_sockets: bool = Field(
        default=False,
        description="with network = false, let the run create Unix sockets (otherwise a seccomp filter refuses "
        "socket(AF_UNIX), so no local service is reachable wherever its socket lives)",
    )
    max_collected_files: int = Field(default=100, ge=0, description="produced files reported per run")
    languages: list[Language] = Field(default_factory=lambda: list(LANGUAGES), description="which run_* actions")
    prefix: str = Field(default="", description="prepended to the action names (two sandboxes side by side)")
    risk: keel.Risk | None = Field(
        default=None, description="the actions' risk; default: write, or irreversible with network"
    )
    visible_to: list[str] | None = Field(default=None, description="agents (or 'tag:<t>') that may see the actions")
    python: str = Field(default="python3", description="the Python interpreter, looked up on the minimal PATH")
    node: str = Field(default="node", description="the Node.js binary")
    shell: str = Field(default="/bin/sh", description="the shell for run_shell")
    own_user: bool = Field(default=True, description="run as a fresh unused user id when the host is root")
    readonly_filesystem: bool = Field(
        default=True, description="a private mount table where everything but the run folder is read-only"
    )
    workdir_base: str | None = Field(default=None, description="where run folders are made (default: the temp dir)")
    artifacts_dir: str | None = Field(default=None, description="copy produced files to <artifacts_dir>/<run id>/")
    tenant: str = Field(default="default", description="the tenant of the blobs produced files are stored as")

    @classmethod
    def from_permissions(cls, permissions: keel.Permissions, **extra: Any) -> SandboxConfig:
        data = permissions.model_dump(exclude_none=True)
        return cls.model_validate({**data, **extra})

    def permissions(self) -> keel.Permissions:
        return keel.Permissions(
            read_paths=self.read_paths, write_paths=self.write_paths, network=self.network, env=self.env,
            cpu_seconds=self.cpu_seconds, memory_mb=self.memory_mb, wall_seconds=self.wall_seconds,
        )  # fmt: skip

    def effective_risk(self) -> keel.Risk:
        return self.risk or ("irreversible" if self.network else "write")
