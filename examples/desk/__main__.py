"""`make demo`: the support desk on the embedded defaults (local model, SQLite, no key, no network).

    python examples/desk                 # on a terminal: serve the page, walk one ticket, wait for you
    python examples/desk --answer auto   # walk it unattended (what happens without a terminal)
    python examples/desk --scripted      # the scripted test model instead of the local one

State (SQLite databases, the DevTools recording, the generated keel.toml) goes to --state
(default .keel/desk under the current folder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # desk_service, service, walk

import anyio
from service import Desk, free_port, open_desk, serve_app
from walk import devtools_hint, walk


async def main(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    answer = args.answer or ("terminal" if interactive else "auto")
    began = time.monotonic()
    print("Keel support desk: one ticket through every stage of docs/production.md", flush=True)
    async with open_desk(Path(args.state), scripted=args.scripted, port=args.port) as desk:
        model = desk.runtime.model()
        print(f"model:     {getattr(model, 'name', type(model).__name__)}   store: {type(desk.runtime.store()).__name__}   "
              f"environments: {', '.join(s.name + ' ' + str(s.status) for s in desk.runtime.environments.status())}")  # fmt: skip
        print(f"worker:    process {desk.worker_pid} (examples/desk/worker.py: the keel-scheduler worker and "
              "scheduler, apart from the gateway's process)", flush=True)  # fmt: skip
        done = await walk(desk, answer=answer, say=lambda line: print(line, flush=True))
        print(f"\nwalked in {time.monotonic() - began:.1f} s")
        print(devtools_hint(desk.state, done["execution_id"]))
        if interactive and not args.exit:
            await stay_up(desk, done["execution_id"])
    failed = [row for row, status in done["doctor"].items() if status == "fail"]
    return 1 if failed or not done["replay_ok"] or done["eval_failed"] else 0


async def stay_up(desk: Desk, execution_id: str) -> None:
    """On a terminal: keep the page up and serve the DevTools UI over the recording, until Enter."""
    from keel_devtools.web import build_app

    port = free_port(7788)
    servers: list[object] = []
    async with anyio.create_task_group() as tg:
        up = anyio.Event()
        tg.start_soon(serve_app, build_app(desk.state / "devtools.db"), port, up, servers)
        await up.wait()
        print(f"\nDevTools:  http://127.0.0.1:{port}/executions/{execution_id}   (the recorded flow)")
        print(f"the page:  {desk.page}")
        print("both stay up; press Enter (or Ctrl-C) to stop")
        await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python examples/desk", description=__doc__.split("\n")[0])
    parser.add_argument("--state", default=".keel/desk", help="where the desk keeps its databases")
    parser.add_argument("--scripted", action="store_true", help="the scripted test model instead of the local one")
    parser.add_argument("--answer", choices=["auto", "terminal", "page"], help="who answers the refund approval")
    parser.add_argument("--port", type=int, default=8000, help="the page's port (another free one if taken)")
    parser.add_argument("--exit", action="store_true", help="exit after the walk, even on a terminal")
    try:
        sys.exit(anyio.run(main, parser.parse_args()))
    except KeyboardInterrupt:
        print("\nstopped")
        sys.exit(130)
