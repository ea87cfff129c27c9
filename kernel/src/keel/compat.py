"""The kernel's contract version, and whether an installed plugin was built for it.

Every plugin declares the kernel range it supports as an ordinary requirement,
``keel-kernel>=0.1,<0.2``, the way pytest plugins name the pytest they support and OpenTelemetry
contrib packages name the SDK they instrument. The kernel reads that requirement from the plugin's
distribution metadata, before importing the plugin, so a plugin built for another contract is
reported with both versions named instead of failing at its first hook call.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass

__all__ = ["CONTRACT_VERSION", "KERNEL_DISTRIBUTION", "KernelRange", "kernel_range", "kernel_version"]

KERNEL_DISTRIBUTION = "keel-kernel"

#: the version of the kernel's contract (hookspecs and boundary types): the kernel's ``major.minor``.
#: In 0.x a minor release may change the contract; from 1.0 only a major release does.
CONTRACT_VERSION = "0.1"

_NAME = re.compile(r"^\s*keel[-_.]kernel\s*(?P<rest>.*)$", re.I)


def kernel_version() -> str:
    """The installed kernel's version ('' when the kernel is not installed as a distribution)."""
    try:
        return importlib.metadata.version(KERNEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return ""


@dataclass(frozen=True)
class KernelRange:
    """What one distribution declares about the kernel, and whether the installed kernel is in it."""

    distribution: str
    specifier: str  # '' when the distribution names the kernel without a range, or not at all
    installed: str
    compatible: bool

    def problem(self) -> str:
        """A one-line explanation when incompatible, naming both versions and the fix."""
        if self.compatible:
            return ""
        return (
            f"{self.distribution} needs keel-kernel{self.specifier}; installed keel-kernel {self.installed} "
            f"(contract {CONTRACT_VERSION}). Fix: install a {self.distribution} release built for this kernel, "
            f"or a keel-kernel within {self.specifier}"
        )


def kernel_range(distribution: str, requires: list[str] | None = None) -> KernelRange | None:
    """The kernel range ``distribution`` declares; ``None`` when it is not installed.

    :param requires: its ``Requires-Dist`` lines when the caller holds them already (an entry
        point's ``dist.requires``), which saves a second search of ``sys.path``.
    """
    if requires is None:
        try:
            requires = importlib.metadata.requires(distribution) or []
        except importlib.metadata.PackageNotFoundError:
            return None
    installed = kernel_version()
    for requirement in requires:
        match = _NAME.match(requirement)
        if match is None:
            continue
        spec, _, marker = match["rest"].partition(";")
        if "extra" in marker:  # a requirement of one of the plugin's optional extras, not of the plugin
            continue
        spec = spec.strip()
        if spec.startswith("["):  # keel-kernel[yaml]>=0.1: the extras say nothing about the range
            spec = spec.partition("]")[2].strip()
        spec = spec.strip("()")
        return KernelRange(distribution, spec, installed, _contains(spec, installed))
    return KernelRange(distribution, "", installed, True)


_CLAUSE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*$")
_RELEASE = re.compile(r"^\d+(?:\.\d+)*$")
_COMPARE = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def _release(version: str, width: int) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (width - len(parts)))


def _contains(specifier: str, version: str) -> bool:
    if not specifier or not version:
        return True
    clauses = [_CLAUSE.match(c) for c in specifier.split(",")]
    if _RELEASE.match(version) and all(clauses):
        # plain release numbers (every first-party range): compared here, because importing
        # packaging costs ~20 ms at every start of every `keel` command
        width = max(len(version.split(".")), *(len(c[2].split(".")) for c in clauses if c))
        mine = _release(version, width)
        return all(_COMPARE[c[1]](mine, _release(c[2], width)) for c in clauses if c)
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(specifier, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False
