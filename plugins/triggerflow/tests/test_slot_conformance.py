"""TriggerFlow's ``runner`` slot passes the kernel's SlotConformance: keel stack checks it."""

from __future__ import annotations

import pytest

import keel
from keel.testing import make_host
from keel.testing.conformance import SlotConformance
from keel_triggerflow import plugin


class TestRunnerSlot(SlotConformance):
    slot = "runner"
    good = "local"
    good_options = {"retention": "30d"}
    bad_options = {"retention": "soon"}

    @pytest.fixture
    def slot_host(self) -> keel.PluginHost:
        return make_host(plugin)
