from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stevedore import ExtensionManager

from keel import plugins as plugins_module


def write_dist(
    site: Path,
    name: str,
    *,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str],
    requires: tuple[str, ...] = (),
) -> Path:
    """Write an installed-looking distribution (a .dist-info plus modules) into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    (info / "METADATA").write_text(metadata)
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        path = site / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return site


def reset_discovery_caches() -> None:
    ExtensionManager.ENTRY_POINT_CACHE.clear()
    plugins_module._distribution_index.cache_clear()
    importlib.invalidate_caches()


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Install fake distributions on sys.path for the duration of a test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for var in ("KEEL_LOAD_PLUGINS", "KEEL_DISABLE_PLUGINS", "KEEL_STRICT_PLUGINS", "KEEL_STACK", "KEEL_STACK_FILE"):
        monkeypatch.delenv(var, raising=False)
    reset_discovery_caches()
    before = set(sys.modules)

    def add(
        name: str, *, entry_points: dict[str, dict[str, str]], modules: dict[str, str], requires: tuple[str, ...] = ()
    ) -> Path:
        write_dist(site, name, entry_points=entry_points, modules=modules, requires=requires)
        reset_discovery_caches()
        return site

    yield add
    for module in set(sys.modules) - before:
        sys.modules.pop(module, None)
    reset_discovery_caches()


GOOD_PLUGIN = """
import keel

@keel.hookimpl
def keel_models():
    yield keel.ModelSpec(name="echo", factory=lambda config: None)
"""

BROKEN_PLUGIN = """
raise RuntimeError("boom: missing native library")
"""
