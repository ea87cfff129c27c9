"""DevTools' recorder honours the kernel's observer contract (keel.testing.conformance): bound once
per runtime, it is never disabled, whatever the events hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keel.testing.conformance import ObserverConformance
from keel_devtools import Recorder, plugin


class TestDevToolsRecorder(ObserverConformance):
    @pytest.fixture
    def observer_plugin(self, recorder: Recorder) -> Iterator[Any]:
        yield plugin
        assert recorder.flush(120)
        # nothing it observed vanished uncounted: written, or counted as failed (no JSON can hold
        # some of the conformance kit's payloads) or dropped
        assert recorder.written + recorder.failed + recorder.dropped == recorder.observed
