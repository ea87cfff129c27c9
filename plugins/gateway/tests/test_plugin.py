"""The plugin as the kernel sees it: its entry point, its channels, its command, a cheap import."""

from __future__ import annotations

import subprocess
import sys

import click

import keel
import keel_gateway.plugin
from keel.testing import make_host


def test_entry_point_names_the_plugin_module() -> None:
    from importlib.metadata import entry_points

    (found,) = [e for e in entry_points(group="keel") if e.name == "gateway"]
    assert found.value == "keel_gateway.plugin"


def test_channels_are_registered() -> None:
    host = make_host(keel_gateway.plugin)
    assert {"sse", "websocket", "webhook", "console"} <= set(host.channels())


def test_serve_command_is_added() -> None:
    group = click.Group("keel")
    keel_gateway.plugin.keel_commands(group)
    assert "serve" in group.commands


def test_importing_the_plugin_does_not_import_fastapi_or_uvicorn() -> None:
    code = "import sys, keel_gateway.plugin, keel_gateway; print(sorted(m for m in ('fastapi', 'uvicorn', 'httpx', 'jwt', 'jsonschema') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_unknown_channel_in_the_stack_is_a_clear_error(tmp_path) -> None:
    import pytest

    from keel_gateway import create_app

    (tmp_path / "keel.toml").write_text('channels = ["pigeon"]\n')
    runtime = keel.Runtime(make_host(keel_gateway.plugin), keel.load_stack(tmp_path / "keel.toml"))
    with pytest.raises(keel.KeelError, match="unknown channel 'pigeon'.*console"):
        create_app(runtime)
