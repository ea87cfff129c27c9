"""The toolbox's actions: conformance, http_fetch against a real local HTTP server, the file
actions against path traversal, absolute paths and symbolic links."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.stack import load_stack
from keel.testing import make_host
from keel.testing.conformance import ActionConformance, EnvironmentConformance
from keel_toolbox import ToolboxSettings, install, plugin, toolbox_actions


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "text/plain; charset=utf-8", "X-Tracking": "t", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/ok":
            self._send(200, "héllo from the server".encode())
        elif self.path == "/big":
            self._send(200, b"x" * (3 * 1024 * 1024))
        elif self.path == "/missing":
            self._send(404, b"nothing here")
        elif self.path == "/to-ok":
            self._send(302, headers={"Location": "/ok"})
        elif self.path == "/off-list":
            self._send(302, headers={"Location": f"http://localhost:{port}/ok"})
        elif self.path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        else:
            self._send(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def actions(**options: Any) -> dict[str, keel.ActionSpec]:
    return {spec.name: spec for spec in toolbox_actions(**options)}


class TestHttpFetch(ActionConformance):
    @pytest.fixture
    def action_spec(self, server: str) -> keel.ActionSpec:
        return actions(allow_hosts=[server])["http_fetch"]

    @pytest.fixture
    def valid_arguments(self, server: str) -> dict[str, Any]:
        return {"url": f"http://{server}/ok"}


class TestReadFile(ActionConformance):
    @pytest.fixture
    def action_spec(self, tmp_path: Path) -> keel.ActionSpec:
        (tmp_path / "a.txt").write_text("A")
        return actions(root=str(tmp_path))["read_file"]

    @pytest.fixture
    def valid_arguments(self) -> dict[str, Any]:
        return {"path": "a.txt"}


class TestWriteFile(ActionConformance):
    @pytest.fixture
    def action_spec(self, tmp_path: Path) -> keel.ActionSpec:
        return actions(root=str(tmp_path))["write_file"]

    @pytest.fixture
    def valid_arguments(self) -> dict[str, Any]:
        return {"path": "b.txt", "content": "B"}


class TestToolboxEnvironment(EnvironmentConformance):
    @pytest.fixture
    def environment_spec(self) -> keel.EnvironmentSpec:
        return make_host(plugin).environments()["toolbox"].spec

    @pytest.fixture
    def environment(self, environment_spec: keel.EnvironmentSpec, tmp_path: Path) -> keel.Environment:
        return environment_spec.factory({"root": str(tmp_path / "ws")})


# ------------------------------------------------------------------------------- http_fetch


async def call(spec: keel.ActionSpec, **arguments: Any) -> keel.ActionOutcome:
    registry = keel.ActionRegistry()
    registry.add(spec)
    return await keel.call_action(
        registry, spec.name, arguments, context=keel.ActionContext(),
        check=lambda call, ctx: keel.PolicyDecision(verdict="allow"),
    )  # fmt: skip


async def test_fetch_returns_status_headers_and_text(server: str) -> None:
    result = await keel.invoke_action(actions(allow_hosts=[server])["http_fetch"], {"url": f"http://{server}/ok"})
    assert result["status"] == 200 and result["text"] == "héllo from the server" and not result["truncated"]
    assert result["headers"]["content-type"].startswith("text/plain") and "x-tracking" not in result["headers"]
    missing = await keel.invoke_action(actions(allow_hosts=[server])["http_fetch"], {"url": f"http://{server}/missing"})
    assert missing["status"] == 404 and missing["text"] == "nothing here", "an HTTP error status is a result"


async def test_fetch_refuses_hosts_off_the_allow_list(server: str) -> None:
    port = server.split(":")[1]
    for allow in ([], ["example.com"], [f"127.0.0.1:{int(port) + 1}"], ["*.0.0.1"]):
        outcome = await call(actions(allow_hosts=allow)["http_fetch"], url=f"http://{server}/ok")
        assert not outcome.ok and outcome.error is not None
        assert outcome.error["type"] == "HostNotAllowed" and "not on the allow list" in outcome.error["message"]
    for bad in ("file:///etc/passwd", "ftp://127.0.0.1/", f"http://user:pw@{server}/ok"):
        outcome = await call(actions(allow_hosts=[server])["http_fetch"], url=bad)
        assert not outcome.ok, bad


async def test_redirects_are_checked_against_the_allow_list(server: str) -> None:
    spec = actions(allow_hosts=[server], max_redirects=3)["http_fetch"]
    followed = await keel.invoke_action(spec, {"url": f"http://{server}/to-ok"})
    assert followed["status"] == 200 and followed["redirects"] == [f"http://{server}/ok"]
    off = await call(spec, url=f"http://{server}/off-list")
    assert not off.ok and off.error and "'localhost' is not on the allow list" in off.error["message"]
    loop = await call(spec, url=f"http://{server}/loop")
    assert not loop.ok and loop.error and "more than 3 redirects" in loop.error["message"]


async def test_fetch_size_and_time_limits(server: str) -> None:
    big = await keel.invoke_action(
        actions(allow_hosts=[server], fetch_max_bytes=1000)["http_fetch"], {"url": f"http://{server}/big"}
    )
    assert big["truncated"] and big["bytes"] == 1000
    assert big["text"].startswith("x" * 1000) and big["text"].endswith(
        "[... truncated by keel-toolbox at 1000 bytes ...]"
    )
    started = time.monotonic()
    slow = await call(actions(allow_hosts=[server], fetch_timeout=0.5)["http_fetch"], url=f"http://{server}/slow")
    assert not slow.ok and slow.error and "longer than 0.5s" in slow.error["message"]
    assert time.monotonic() - started < 3, "the time limit cut the request short"


def test_wildcard_hosts() -> None:
    from keel_toolbox.fetch import host_allowed

    assert host_allowed("https://api.example.com/x", ["*.example.com"])
    assert not host_allowed("https://example.com/x", ["*.example.com"])
    assert not host_allowed("https://evilexample.com/x", ["*.example.com"])
    assert host_allowed("https://example.com:443/x", ["example.com:443"])
    assert not host_allowed("http://example.com/x", ["example.com:443"])


# ------------------------------------------------------------------------------------ files


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "ws" / "sub").mkdir(parents=True)
    (tmp_path / "ws" / "sub" / "note.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    return tmp_path / "ws"


async def test_read_and_write_inside_the_folder(root: Path) -> None:
    specs = actions(root=str(root))
    assert specs["read_file"].risk == "read" and specs["write_file"].risk == "write"
    assert (await keel.invoke_action(specs["read_file"], {"path": "sub/note.txt"}))["text"] == "inside"
    written = await keel.invoke_action(specs["write_file"], {"path": "new/deep/out.md", "content": "# hi"})
    assert written == {"path": "new/deep/out.md", "bytes_written": 4, "size": 4, "mode": "overwrite"}
    assert (root / "new" / "deep" / "out.md").read_text() == "# hi"
    await keel.invoke_action(specs["write_file"], {"path": "new/deep/out.md", "content": "!", "mode": "append"})
    assert (root / "new" / "deep" / "out.md").read_text() == "# hi!"
    again = await call(specs["write_file"], path="new/deep/out.md", content="x", mode="create")
    assert not again.ok and again.error and "already exists" in again.error["message"]
    assert sorted(p.name for p in (root / "new" / "deep").iterdir()) == ["out.md"], "no temporary file left"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../secret.txt", "path traversal is refused"),
        ("sub/../../secret.txt", "path traversal is refused"),
        ("/etc/passwd", "absolute paths are refused"),
        ("~/x", "absolute paths are refused"),
        ("", "the path is empty"),
        ("link-out", "symbolic link"),
        ("dirlink/secret.txt", "symbolic link"),
        ("inner-link", "symbolic link"),
        ("nope.txt", "no such file"),
    ],
)
async def test_paths_that_leave_the_folder_are_refused(root: Path, path: str, message: str) -> None:
    (root / "link-out").symlink_to(root.parent / "secret.txt")
    (root / "dirlink").symlink_to(root.parent)
    (root / "inner-link").symlink_to(root / "sub" / "note.txt")  # links are never followed, even inside
    specs = actions(root=str(root))
    read = await call(specs["read_file"], path=path)
    assert not read.ok and read.error and read.error["type"] == "FileAccessError"
    assert message in read.error["message"], read.error
    if message != "no such file":
        write = await call(specs["write_file"], path=path, content="pwned")
        assert not write.ok and write.error and write.error["type"] == "FileAccessError", write
    assert (root.parent / "secret.txt").read_text() == "outside"
    assert (root / "sub" / "note.txt").read_text() == "inside"


async def test_limits_on_file_sizes(root: Path) -> None:
    (root / "big.txt").write_text("y" * 5000)
    specs = actions(root=str(root), read_max_bytes=100, write_max_bytes=10)
    read = await keel.invoke_action(specs["read_file"], {"path": "big.txt"})
    assert read["truncated"] and read["size"] == 5000 and read["text"].startswith("y" * 100)
    assert "5000 bytes, 100 shown" in read["text"]
    too_big = await call(specs["write_file"], path="w.txt", content="z" * 11)
    assert not too_big.ok and too_big.error and "over the limit of 10 bytes" in too_big.error["message"]
    assert not (root / "w.txt").exists()


# ---------------------------------------------------------------------------- configuration


def runtime(tmp_path: Path, toml: str) -> keel.Runtime:
    (tmp_path / "keel.toml").write_text(toml)
    return keel.Runtime(make_host(plugin), load_stack(cwd=tmp_path))


async def test_install_reads_settings_from_the_stack(tmp_path: Path, server: str) -> None:
    rt = runtime(tmp_path, f'[settings.toolbox]\nroot = "{tmp_path / "ws"}"\nallow_hosts = ["{server}"]\n')
    async with rt:
        assert [s.name for s in install(rt)] == ["http_fetch", "read_file", "write_file"]
        assert rt.actions.source("write_file") == "keel-toolbox"
        wrote = await rt.call_action("write_file", {"path": "a.txt", "content": "via runtime"})
        assert wrote.ok and (tmp_path / "ws" / "a.txt").read_text() == "via runtime"
        fetched = await rt.call_action("http_fetch", {"url": f"http://{server}/ok"})
        assert fetched.ok and fetched.result["status"] == 200


def test_no_settings_means_no_file_actions_and_no_hosts(tmp_path: Path) -> None:
    rt = runtime(tmp_path, "")
    assert [s.name for s in install(rt)] == ["http_fetch"]
    assert "none configured" in rt.actions.get("http_fetch").description
    with pytest.raises(keel.StackError, match=r"allow_host: Extra inputs.*Valid options: root, allow_hosts"):
        ToolboxSettings.parse({"allow_host": ["x"]})


async def test_environment_driver_offers_the_actions(tmp_path: Path, server: str) -> None:
    toml = f'[environments.tools]\ndriver = "toolbox"\nstart = "eager"\nroot = "{tmp_path / "ws"}"\nallow_hosts = ["{server}"]\n'
    rt = runtime(tmp_path, toml)
    async with rt:
        (state,) = rt.environments.status()
        assert state.status == "ready" and state.actions == ["http_fetch", "read_file", "write_file"]
        assert rt.actions.source("read_file") == "environment:tools"
        assert (await rt.call_action("write_file", {"path": "x.txt", "content": "env"})).ok
    assert (tmp_path / "ws" / "x.txt").read_text() == "env"


def test_entry_module_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, keel_toolbox.plugin, keel_toolbox; print('httpx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert done.stdout.strip() == "False", "importing the plugin must not import httpx"


def test_keel_stack_checks_an_environment_table_naming_the_key(tmp_path: Path) -> None:
    # EnvironmentSpec.options: a typo is refused when the stack resolves, before anything starts
    (tmp_path / "keel.toml").write_text(
        'store = "memory"\n[environments.tools]\ndriver = "toolbox"\nstart = "eager"\nallow_host = ["example.com"]\n'
    )
    with pytest.raises(keel.StackError) as caught:
        load_stack(tmp_path / "keel.toml").check(make_host(plugin))
    message = str(caught.value)
    assert "[environments.tools] of driver 'toolbox'" in message and "allow_host" in message
    assert "allow_hosts" in message, "the valid keys are named"
    (tmp_path / "keel.toml").write_text(
        'store = "memory"\n[environments.tools]\ndriver = "toolbox"\nallow_hosts = ["example.com"]\nroot = "ws"\n'
    )
    rows = {r["slot"]: r for r in load_stack(tmp_path / "keel.toml").check(make_host(plugin))}
    assert rows["environments.tools"]["status"] == "ok"
