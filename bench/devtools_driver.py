"""``devtools_driver.py plain|recorded N``: N sequential structured-output executions on the scripted
model, recorded by keel-devtools (writes flushed) or not. Run under valgrind by ``bench/devtools.py``
(figure ``devtools.record_instructions``) to count what recording adds in instructions."""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

# bench/ goes last: its queue.py is not the stdlib's (a script's own folder comes first by default)
BENCH = str(pathlib.Path(__file__).resolve().parent)
sys.path[:] = [entry for entry in sys.path if entry and pathlib.Path(entry).resolve() != pathlib.Path(BENCH)] + [BENCH]

import anyio  # noqa: E402  (after the path fix above)
from common import ANSWER, MODEL_SOURCE, PROMPT  # noqa: E402

import keel  # noqa: E402
from keel.testing import ScriptedModel, make_host  # noqa: E402

namespace: dict[str, object] = {}
exec(MODEL_SOURCE, namespace)  # the bench's 10-field Report
Report = namespace["Report"]


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    agent = keel.Agent("bench", "Summarise the report.", output=Report)
    answer = json.dumps(ANSWER)
    recorder = None
    if mode == "recorded":
        import keel_devtools
        from keel_devtools import plugin

        host = make_host(plugin)
        recorder = keel_devtools.configure(pathlib.Path(tempfile.mkdtemp()) / "r.db")
    else:
        host = make_host()

    async def run() -> None:
        async with keel.Runtime(host, keel.Stack()) as runtime:
            runtime.use_model(ScriptedModel(lambda request: answer, chunks=16))
            for _ in range(n):
                execution = await agent.start(PROMPT, runtime=runtime)
                await execution.result()

    anyio.run(run)
    if recorder is not None:
        assert recorder.flush(600) and recorder.dropped == 0 and recorder.failed == 0
        print(f"recorded {recorder.written} events", file=sys.stderr)


if __name__ == "__main__":
    main()
