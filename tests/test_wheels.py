"""Install only what you need, from real wheels: each stack below is built with `uv build` from the
tree and installed (no editable installs, no workspace on the path) into a venv of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, clean_env

UV = [sys.executable, "-m", "uv"]

APPROVAL_FLOW = """
from keel_triggerflow import TriggerFlow

async def draft(ctx):
    return "draft: " + ctx.value["topic"]

async def gate(ctx):
    return await ctx.pause_for("approval", {"draft": ctx.value})

async def publish(ctx):
    return {"published": bool(ctx.value.get("approved")), "draft": ctx.state.get("draft")}

flow = TriggerFlow("approve")
flow.to(draft).set_state("draft").to(gate).to(publish)
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every workspace package's wheel, as `make dist` builds them."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([*UV, "build", "--quiet", "--all-packages", "--wheel", "--out-dir", str(out)], cwd=ROOT, check=True)
    return out


def venv_with(wheelhouse: Path, folder: Path, *distributions: str) -> Path:
    """A fresh venv holding exactly these distributions (and what they declare), from the wheelhouse."""
    subprocess.run([*UV, "venv", "--quiet", "--python", sys.executable, str(folder)], check=True)
    python = folder / "bin" / "python"
    # --find-links + --no-index for our own names: what a user does with a wheelhouse; third-party
    # dependencies come from the index as usual
    wheels = [str(next(wheelhouse.glob(f"{d.replace('-', '_')}-*.whl"))) for d in distributions]
    subprocess.run([*UV, "pip", "install", "--quiet", "--python", str(python), *wheels], check=True)
    return folder / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def flow_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield venv_with(
        wheelhouse, tmp_path_factory.mktemp("venv") / "v", "keel-kernel", "keel-triggerflow", "keel-store-sqlite"
    )


def test_installed_from_wheels_not_the_tree(flow_venv: Path, tmp_path: Path) -> None:
    where = run(
        flow_venv,
        tmp_path,
        "python",
        "-c",
        "import keel, keel_triggerflow; print(keel.__file__, keel_triggerflow.__file__)",
    )
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert "site-packages" in path and not path.startswith(str(ROOT / "kernel")), path
    listed = run(flow_venv, tmp_path, "keel", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {row["name"]: row for row in json.loads(listed.stdout)}
    assert {"triggerflow", "sqlite"} <= set(names)
    assert not {"gateway", "openai", "mcp"} & set(names), "a stack holds only what was installed"


def test_durable_flow_across_two_processes(flow_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "keel.toml").write_text('store = "sqlite"\n')
    (tmp_path / "approve.py").write_text(APPROVAL_FLOW)
    started = run(flow_venv, tmp_path, "keel", "flow", "run", "approve.py", "--input", '{"topic": "tides"}', "--json")
    assert started.returncode == 0, started.stderr
    waiting = json.loads(started.stdout)
    assert waiting["status"] == "waiting", waiting
    # a second process, started after the first exited, answers the wait from the SQLite file
    done = run(
        flow_venv,
        tmp_path,
        "keel",
        "flow",
        "signal",
        waiting["execution_id"],
        "approval",
        '{"approved": true}',
        "--json",
    )
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert snapshot["status"] == "completed"
    assert snapshot["result"] == {"published": True, "draft": "draft: tides"}


def test_gateway_and_openai_alone(wheelhouse: Path, tmp_path: Path) -> None:
    bin_dir = venv_with(wheelhouse, tmp_path / "v", "keel-kernel", "keel-gateway", "keel-model-openai")
    listed = run(bin_dir, tmp_path, "keel", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"gateway", "openai"} <= {row["name"] for row in json.loads(listed.stdout)}
    serve_page_from_the_wheel(bin_dir, tmp_path)


def serve_page_from_the_wheel(bin_dir: Path, cwd: Path) -> None:
    """`keel serve` from the installed wheel serves its console page: the assets are in the wheel."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    server = subprocess.Popen(
        [str(bin_dir / "keel"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "keel serve did not answer within 60 s"
                time.sleep(0.2)
        assert page.status_code == 200 and "Keel console" in page.text
        script = httpx.get(f"http://127.0.0.1:{port}/ui/console.js", timeout=5)
        assert script.status_code == 200 and "EventSource" in script.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_wheel_carries_readme_licence_and_py_typed(wheelhouse: Path) -> None:
    import zipfile

    wheels = sorted(wheelhouse.glob("*.whl"))
    members = [
        p
        for p in [ROOT / "kernel", *ROOT.glob("plugins/*"), *ROOT.glob("contrib/*")]
        if (p / "pyproject.toml").exists()
    ]
    assert len(wheels) == len(members) - 1, "one wheel per workspace package (the template is built on its own)"
    for wheel in wheels:
        names = zipfile.ZipFile(wheel).namelist()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), f"{wheel.name} has no licence"
        assert any(n.endswith("/py.typed") for n in names), f"{wheel.name} has no py.typed"
        metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert "Description-Content-Type: text/markdown" in metadata, f"{wheel.name} carries no README"


def test_every_package_declares_the_kernel_range_it_supports() -> None:
    import tomllib

    for pyproject in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("contrib/*/pyproject.toml")]:
        deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
        kernel = [d for d in deps if d.replace("_", "-").startswith("keel-kernel")]
        assert kernel, f"{pyproject.parent.name} does not depend on keel-kernel"
        assert "<" in kernel[0], (
            f"{pyproject.parent.name}: declare the kernel range it supports, e.g. keel-kernel>=0.1,<0.2"
        )
