"""Schedules another plugin keeps and fires (keel-scheduler's hook ``keel_scheduler_schedules``),
behind the same calls as :class:`keel_scheduler.schedules.Schedules`.

keel-runner-temporal answers the hook on a stack whose runner is ``temporal``: the schedules are
Temporal Schedules, which Temporal fires. keel-scheduler validates each spec itself
(:func:`parse_schedule`) and hands the engine plain data; it never imports the engine's plugin.
"""

from __future__ import annotations

import builtins
from typing import Any

import keel
from keel_scheduler import hookspecs
from keel_scheduler.errors import JobNotFound
from keel_scheduler.schedules import Schedule, Schedules, ScheduleState, parse_schedule

__all__ = ["EngineSchedules", "schedule_engine", "schedules_for"]


def schedule_engine(runtime: keel.Runtime) -> EngineSchedules | None:
    """The engine a plugin keeps this stack's schedules in, or ``None`` (keel-scheduler's own tables)."""
    pm = runtime.host.pm
    caller = getattr(pm.hook, "keel_scheduler_schedules", None)
    if caller is None or caller.spec is None:
        pm.add_hookspecs(hookspecs)  # a host built by hand, without this plugin's keel_addhooks
    engine = pm.hook.keel_scheduler_schedules(runtime=runtime)
    return None if engine is None else EngineSchedules(engine)


def schedules_for(runtime: keel.Runtime, queue: Any) -> EngineSchedules | Schedules:
    """The stack's schedules, wherever the stack keeps them: the engine a plugin answers
    ``keel_scheduler_schedules`` with (Temporal Schedules on a stack whose runner is ``temporal``),
    else keel-scheduler's own tables in ``queue``'s database.

    Application code that adds schedules should use this rather than ``Schedules(queue)``, which
    always writes to keel-scheduler's tables: on a stack whose schedules another engine fires, no
    ``keel scheduler`` runs (it refuses), so a schedule written there would never fire."""
    return schedule_engine(runtime) or Schedules(queue)


class EngineSchedules:
    """A plugin's schedule engine, seen as :class:`~keel_scheduler.schedules.Schedules`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        #: where the schedules are kept and what fires them (for messages)
        self.where: str = str(getattr(engine, "where", type(engine).__name__))

    async def add(self, schedule: Schedule | dict[str, Any], *, replace: bool = False) -> ScheduleState:
        spec = parse_schedule(schedule)
        return _state(await self.engine.add(spec.model_dump(mode="json"), replace=replace))

    async def get(self, schedule_id: str) -> ScheduleState:
        return _state(await self._call("get", schedule_id))

    async def list(self) -> builtins.list[ScheduleState]:
        return [_state(state) for state in await self.engine.list()]

    async def pause(self, schedule_id: str) -> ScheduleState:
        return _state(await self._call("pause", schedule_id))

    async def resume(self, schedule_id: str) -> ScheduleState:
        return _state(await self._call("resume", schedule_id))

    async def remove(self, schedule_id: str) -> None:
        await self._call("remove", schedule_id)

    async def trigger(self, schedule_id: str) -> dict[str, Any]:
        done: dict[str, Any] = await self._call("trigger", schedule_id)
        return done

    async def backfill(self, schedule_id: str, start: float, end: float) -> dict[str, Any]:
        done: dict[str, Any] = await self._call("backfill", schedule_id, start, end)
        return done

    async def _call(self, method: str, schedule_id: str, *args: Any) -> Any:
        try:
            return await getattr(self.engine, method)(schedule_id, *args)
        except keel.NotFoundError as err:  # the same error as keel-scheduler's own tables give
            raise JobNotFound(str(err)) from None


def _state(data: dict[str, Any]) -> ScheduleState:
    return ScheduleState.model_validate({**data, "schedule": Schedule.model_validate(data["schedule"])})
