"""A plugin declares the kernel range it was built for; the kernel reads it before importing the plugin."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.compat import CONTRACT_VERSION, kernel_range, kernel_version


def dist(site: Path, name: str, *requires: str) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def test_the_contract_version_is_the_kernels_major_minor() -> None:
    assert keel.CONTRACT_VERSION == CONTRACT_VERSION
    assert ".".join(importlib.metadata.version("keel-kernel").split(".")[:2]) == CONTRACT_VERSION


def test_a_plugin_for_this_kernel_is_compatible(site: Path) -> None:
    dist(site, "keel-good", "keel-kernel>=0.1,<0.2", "anyio>=4")
    found = kernel_range("keel-good")
    assert found is not None and found.compatible and found.problem() == ""
    assert found.specifier == "<0.2,>=0.1" or found.specifier == ">=0.1,<0.2"


def test_a_plugin_for_another_contract_names_both_versions(site: Path) -> None:
    dist(site, "keel-future", "keel_kernel (>=0.3,<0.4)")
    found = kernel_range("keel-future")
    assert found is not None and not found.compatible
    problem = found.problem()
    assert "keel-future needs keel-kernel>=0.3,<0.4" in problem
    assert f"installed keel-kernel {kernel_version()}" in problem and "Fix:" in problem


def test_extras_and_optional_requirements_are_read_right(site: Path) -> None:
    dist(site, "keel-extras", "keel-kernel[yaml]>=0.1,<0.2", 'keel-kernel>=9; extra == "future"')
    found = kernel_range("keel-extras")
    assert found is not None and found.compatible and found.specifier == ">=0.1,<0.2"


def test_an_unreadable_range_fails_closed(site: Path) -> None:
    dist(site, "keel-garbled", "keel-kernel>=banana")
    found = kernel_range("keel-garbled")
    assert found is not None and not found.compatible


def test_no_range_and_not_installed(site: Path) -> None:
    dist(site, "keel-loose", "keel-kernel")
    found = kernel_range("keel-loose")
    assert found is not None and found.compatible and found.specifier == ""
    assert kernel_range("keel-not-installed-anywhere") is None


GOOD = """
import keel

@keel.hookimpl
def keel_models():
    yield keel.ModelSpec(name="echo", factory=lambda config: None)
"""


def test_keel_plugins_reports_a_plugin_for_another_contract(fake_site: Any, tmp_path: Path) -> None:
    from test_cli import keel_cli

    fake_site(
        "keel-future",
        entry_points={"keel": {"future": "keel_future_plugin"}},
        modules={"keel_future_plugin": "raise RuntimeError('imported although incompatible')"},
        requires=("keel-kernel>=0.3,<0.4",),
    )
    site = fake_site(
        "keel-fits",
        entry_points={"keel": {"fits": "keel_fits_plugin"}},
        modules={"keel_fits_plugin": GOOD},
        requires=("keel-kernel>=0.1,<0.2",),
    )
    result = keel_cli(site, "plugins", cwd=tmp_path, KEEL_LOAD_PLUGINS="future,fits")
    assert result.returncode == 0, result.stderr
    assert "future                   incompatible" in result.stdout
    assert "keel-future needs keel-kernel>=0.3,<0.4" in result.stdout
    assert f"installed keel-kernel {kernel_version()}" in result.stdout
    assert "imported although incompatible" not in result.stdout + result.stderr
    assert "fits                     loaded       keel-fits 0.1  (keel-kernel>=0.1,<0.2)" in result.stdout

    as_json = keel_cli(site, "plugins", "--json", cwd=tmp_path, KEEL_LOAD_PLUGINS="future,fits")
    rows = {row["name"]: row for row in json.loads(as_json.stdout)}
    assert rows["future"]["status"] == "incompatible" and rows["future"]["kernel_range"] == ">=0.3,<0.4"

    strict = keel_cli(site, "plugins", cwd=tmp_path, KEEL_LOAD_PLUGINS="future,fits", KEEL_STRICT_PLUGINS="1")
    assert strict.returncode == 1 and "keel-future needs keel-kernel>=0.3,<0.4" in strict.stdout


@pytest.mark.parametrize(
    ("specifier", "version", "inside"),
    [
        (">=0.1,<0.2", "0.1.0", True),
        (">=0.1,<0.2", "0.2.0", False),
        (">=0.1,<0.2", "0.1.9", True),
        ("<0.2,>=0.1", "0.0.9", False),
        ("==0.1", "0.1.0", True),
        ("!=0.1.3", "0.1.3", False),
        (">0.1", "0.1.0", False),
        ("~=0.1.0", "0.1.5", True),  # not a plain clause: packaging decides
        ("~=0.1.0", "0.2.0", False),
        (">=0.1", "0.1.0rc1", False),  # a pre-release kernel: packaging decides
    ],
)
def test_ranges_without_and_with_packaging(specifier: str, version: str, inside: bool) -> None:
    from keel.compat import _contains

    assert _contains(specifier, version) is inside
