"""Running a dataset: every case (times ``repeat``) through a runnable, then through its evaluators.

The runnable is anything in ``runtime.runnables`` (an agent, a flow): it is started through the
kernel's ``Execution`` protocol, its RuntimeEvents are kept (model requests, tokens, action calls
are read from them), and each evaluator's result is published as a ``gen_ai.evaluation.result``
event, so an OpenTelemetry exporter or DevTools sees the scores next to the run they judge.

Recorded action results (a case's ``fixtures.actions``) stand in for the actions while that case
runs: the action keeps its name, schema, scope and policy, but its handler answers from the record,
so the case has no side effects. Other cases, running at the same time, call the real action.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import anyio

from keel import (
    ActionSpec,
    EvalResult,
    EvalSample,
    EvaluatorSpec,
    Execution,
    KeelError,
    PluginHost,
    Runnable,
    Runtime,
    RuntimeEvent,
    invoke_action,
    load_ref,
    new_id,
)
from keel_eval.cases import ActionFixture, Case, Dataset
from keel_eval.errors import EvalError
from keel_eval.evaluators import check_arguments
from keel_eval.paths import to_json
from keel_eval.report import EXPECTED_ERROR, CaseReport, Report, RunRecord

__all__ = ["EVALUATION_EVENT", "evaluator_specs", "rescore", "resolve_runnable", "run_dataset"]

#: the OpenTelemetry GenAI semantic-convention event for one evaluation result
EVALUATION_EVENT = "gen_ai.evaluation.result"
#: events left out of reports: one per streamed chunk, and nothing an evaluator reads
SKIPPED_EVENTS = frozenset({"model.delta"})
FIXTURE_SOURCE = "keel-eval fixtures"

Progress = Callable[[CaseReport, RunRecord], None]


# ----------------------------------------------------------------------------- evaluators


def evaluator_specs(host: PluginHost) -> dict[str, EvaluatorSpec]:
    return {name: registered.spec for name, registered in host.evaluators().items()}


def _check(cases: list[Case], specs: dict[str, EvaluatorSpec]) -> None:
    """Every evaluator a case names exists and (for the built-ins) gets valid arguments: checked
    before anything runs, so a typo costs no model calls."""
    for case in cases:
        where = f"{case.source or 'case'}: case {case.name!r}"
        for ref in case.evaluators:
            if ref.name not in specs:
                known = ", ".join(sorted(specs)) or "none (is keel-eval installed and loaded?)"
                raise EvalError(f"{where}: no evaluator named {ref.name!r}; registered: {known}")
            check_arguments(ref.name, ref.arguments, where)


async def _evaluate(spec: EvaluatorSpec, sample: EvalSample) -> EvalResult:
    try:
        result = spec.evaluate(sample)
        if inspect.isawaitable(result):
            result = await result
    except Exception as err:  # one evaluator's failure is its result, not the run's end
        return EvalResult(evaluator=spec.name, passed=False, score=0.0, reason=f"evaluator failed: {err}")
    if not isinstance(result, EvalResult):
        return EvalResult(
            evaluator=spec.name, passed=False, score=0.0,
            reason=f"evaluator returned {type(result).__name__}, not a keel.EvalResult",
        )  # fmt: skip
    return result


def _sample(
    case: Case, run: RunRecord, output: Any, arguments: dict[str, Any], schema: Any, runtime: Any
) -> EvalSample:
    # built without validation: every field already has its type, and this runs per evaluator per case
    return EvalSample.model_construct(
        input=case.input, output=output, expected=case.expected, metadata=case.metadata, arguments=arguments,
        events=run.events, duration_ms=run.duration_ms, error=run.error, output_schema=schema, runtime=runtime,
    )  # fmt: skip


def _expected_error(case: Case, run: RunRecord) -> EvalResult | None:
    """Judge a run against its case's ``expected_error``: it must have failed, with a matching error."""
    if case.expected_error is None:
        return None
    if run.error is None:
        return EvalResult(
            evaluator=EXPECTED_ERROR, passed=False, score=0.0,
            reason=f"the run finished; expected it to fail with /{case.expected_error}/",
        )  # fmt: skip
    if re.search(case.expected_error, run.error):
        return EvalResult(
            evaluator=EXPECTED_ERROR, passed=True, score=1.0, reason=f"failed as expected: {run.error[:120]}"
        )
    return EvalResult(
        evaluator=EXPECTED_ERROR, passed=False, score=0.0,
        reason=f"failed with {run.error[:120]!r}, expected /{case.expected_error}/",
    )  # fmt: skip


def _publish(runtime: Runtime, case: Case, run: RunRecord, result: EvalResult, report_id: str, tenant: str) -> None:
    runtime.publish(
        RuntimeEvent(
            kind=EVALUATION_EVENT,
            execution_id=run.execution_id,
            tenant=tenant,
            source="keel-eval",
            level="info" if result.passed else "warning",
            payload={
                "gen_ai.evaluation.name": result.evaluator,
                "gen_ai.evaluation.score.value": result.score,
                "gen_ai.evaluation.score.label": result.label or ("pass" if result.passed else "fail"),
                "gen_ai.evaluation.explanation": result.reason,
                "keel.eval.case": case.name,
                "keel.eval.repeat": run.repeat,
                "keel.eval.report": report_id,
            },
        )
    )


# ------------------------------------------------------------------------------- fixtures


class _RecordedFailure(Exception):
    """A recorded action call that failed: the run sees the same failure."""


class _CaseFixtures:
    def __init__(self, case: Case):
        self.case = case
        self.left: list[ActionFixture] = list(case.fixtures.actions)
        self.actions = {f.action for f in self.left}

    def answer(self, name: str, arguments: dict[str, Any]) -> Any:
        wanted = to_json(arguments)
        candidates = [f for f in self.left if f.action == name]
        chosen = next((f for f in candidates if f.arguments is not None and f.arguments == wanted), None)
        chosen = chosen or next((f for f in candidates if f.arguments is None), None)
        if chosen is None:
            recorded = [f.arguments for f in self.case.fixtures.actions if f.action == name]
            raise EvalError(
                f"case {self.case.name!r}: no recorded result left for {name}({json.dumps(wanted)}); "
                f"recorded calls of {name}: {json.dumps(recorded)}. Add one to the case's fixtures.actions"
            )
        if chosen.arguments is not None:  # a fixture without arguments answers every call
            self.left.remove(chosen)
        if chosen.error is not None:
            raise _RecordedFailure(chosen.error.get("message") or json.dumps(chosen.error))
        return chosen.result


_CURRENT: ContextVar[_CaseFixtures | None] = ContextVar("keel_eval_case", default=None)


def _stand_in(name: str, original: ActionSpec | None) -> Callable[..., Any]:
    async def handler(**arguments: Any) -> Any:
        state = _CURRENT.get()
        if state is not None and name in state.actions:
            return state.answer(name, arguments)
        if original is None:
            raise EvalError(f"action {name!r} exists here only as a recorded fixture of another case")
        return await invoke_action(original, arguments)

    return handler


@contextmanager
def _fixtures(runtime: Runtime, cases: list[Case]) -> Iterator[None]:
    names = sorted({f.action for case in cases for f in case.fixtures.actions})
    if not names:
        yield
        return
    registry = runtime.actions
    replaced: list[tuple[ActionSpec, str]] = []
    try:
        for name in names:
            if name in registry:
                original, source = registry.get(name), registry.source(name)
                stand_in = original.model_copy(update={"handler": _stand_in(name, original), "input_model": None})
                registry.replace(stand_in, source)
                replaced.append((original, source))
            else:
                registry.add(
                    ActionSpec(
                        name=name, description=f"{name} (recorded results)", parameters={"type": "object"},
                        handler=_stand_in(name, None),
                    ),
                    source=FIXTURE_SOURCE,
                )  # fmt: skip
        yield
    finally:
        for original, source in replaced:
            registry.replace(original, source)
        registry.remove_source(FIXTURE_SOURCE)


# ------------------------------------------------------------------------------- runnables


def resolve_runnable(runtime: Runtime, name: str) -> Runnable:
    """A runnable by its registered name, or imported: ``package.module:attr`` or ``file.py:attr``."""
    if name in runtime.runnables:
        return runtime.runnables.get(name)
    if ":" not in name:
        known = ", ".join(runtime.runnables.names()) or "none"
        raise EvalError(
            f"no runnable named {name!r} (registered: {known}); list it in keel.toml's runnables = [...] "
            "or pass it as package.module:attribute or path/to/file.py:attribute"
        )
    where, _, attr = name.rpartition(":")
    if not where.endswith(".py"):
        obj: Any = load_ref(name, what="runnable", error=EvalError)
    else:
        path = Path(where).resolve()
        spec = importlib.util.spec_from_file_location(f"_keel_eval_{path.stem}", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise EvalError(f"runnable {name!r}: no such file {where}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)
        try:
            obj = functools.reduce(getattr, attr.split("."), module)
        except AttributeError as err:
            raise EvalError(
                f"runnable {name!r}: {where} has no {attr!r} ({err}); check the name after the colon"
            ) from err
    if not isinstance(obj, Runnable):
        raise EvalError(f"{name!r} is a {type(obj).__name__}, not a runnable (an agent or a flow)")
    return runtime.runnables.add(obj)


# --------------------------------------------------------------------------------- running


async def _run_case(
    case: Case, repeat: int, runnable: Runnable, runtime: Runtime, tenant: str, timeout: float | None
) -> tuple[RunRecord, Any]:
    run = RunRecord(repeat=repeat)
    events: list[RuntimeEvent] = []
    output: Any = None
    execution: Execution | None = None
    token = _CURRENT.set(_CaseFixtures(case) if case.fixtures.actions else None)
    # what the run's steps did outside its own event log (a flow's agents, the actions its chunks
    # call) reaches the bus: kept when it shares the run's trace or names the run's execution
    nearby = runtime.bus.subscribe(buffer=100_000)
    started = time.perf_counter()
    try:
        with anyio.move_on_after(timeout) as deadline:
            execution = await runtime.start(runnable, case.input, tenant=tenant)  # a crash fails this case only
            run.execution_id = execution.id
            answered: set[str] = set()
            async for event in execution.events():
                events.append(event)
                if event.kind == "execution.waiting":
                    await _answer(case, execution, event, answered)
            output = await execution.result()
        if deadline.cancelled_caught:
            run.error = f"did not finish within {timeout}s (the dataset's timeout)"
            if execution is not None:
                with anyio.CancelScope(shield=True):
                    await execution.cancel("eval timeout")
    except Exception as err:  # the run's failure is recorded and judged, never the eval's end
        run.error = f"{type(err).__name__}: {err}"
    finally:
        _CURRENT.reset(token)
        # Subscription.drain is kernel 0.1's newest addition; an older kernel: the run's own log only
        drained = nearby.drain() if hasattr(nearby, "drain") else []
        events.extend(_related(drained, events, run.execution_id))
        nearby.close()
    run.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    # fallback: an event payload may hold something JSON cannot (a flow's own objects); keep its text
    run.events = [e.model_dump(mode="json", fallback=str) for e in events if e.kind not in SKIPPED_EVENTS]
    run.output = to_json(output)
    return run, output


def _related(seen: list[RuntimeEvent], own: list[RuntimeEvent], execution_id: str | None) -> list[RuntimeEvent]:
    """Events of the run's trace (its child executions) or of its execution id that its own log lacks."""
    traces = {e.trace_id for e in own if e.trace_id}
    have = {e.id for e in own}
    mine = {execution_id} if execution_id else set()
    return [e for e in seen if e.id not in have and (e.execution_id in mine or e.trace_id in traces)]


async def _answer(case: Case, execution: Execution, event: RuntimeEvent, answered: set[str]) -> None:
    for interrupt in event.payload.get("interrupts", []):
        name = interrupt.get("name")
        if name in answered:
            continue
        fixture = next((s for s in case.fixtures.signals if s.name == name), None)
        if fixture is None:
            given = ", ".join(s.name for s in case.fixtures.signals) or "none"
            await execution.cancel(f"eval: no answer for signal {name!r}")
            raise EvalError(
                f"case {case.name!r}: the run waits for signal {name!r} and the case gives no answer "
                f"(fixtures.signals has: {given}); add - {{name: {name}, payload: ...}}"
            )
        answered.add(name)
        await execution.signal(name, fixture.payload, request_id=f"eval:{case.name}:{name}")


async def run_dataset(
    dataset: Dataset,
    runnable: Runnable | str | None = None,
    *,
    runtime: Runtime,
    repeat: int = 1,
    concurrency: int = 4,
    tenant: str = "default",
    progress: Progress | None = None,
) -> Report:
    """Run every case ``repeat`` times, at most ``concurrency`` runs at once, and judge each run.

    :param runnable: a runnable, a registered name, or an import path; default: the dataset's ``runnable``.
    :param runtime: a started runtime (the model, actions and store the runs use).
    """
    if repeat < 1 or concurrency < 1:
        raise EvalError(f"repeat and concurrency must be at least 1 (got repeat={repeat}, concurrency={concurrency})")
    target = runnable if runnable is not None else dataset.runnable
    if target is None:
        raise EvalError(
            f"dataset {dataset.name!r} names no runnable: pass --runnable NAME (or runnable=...), "
            "or write runnable: NAME in the dataset file"
        )
    chosen = resolve_runnable(runtime, target) if isinstance(target, str) else target
    specs = evaluator_specs(runtime.host)
    _check(dataset.cases, specs)
    try:
        schema = chosen.output_schema()
    except KeelError:
        schema = None
    report = Report(
        dataset=dataset.name, dataset_path=dataset.path, runnable=chosen.name, repeat=repeat,
        concurrency=concurrency, output_schema=schema,
    )  # fmt: skip
    cases = {
        case.name: CaseReport(
            name=case.name,
            description=case.description,
            source=case.source,
            input=to_json(case.input),
            expected=to_json(case.expected),
            metadata=case.metadata,
            evaluators=case.evaluators,
            fixtures=case.fixtures,
        )
        for case in dataset.cases
    }
    report.cases = list(cases.values())
    limiter = anyio.CapacityLimiter(concurrency)

    async def job(case: Case, index: int) -> None:
        async with limiter:
            run, output = await _run_case(case, index, chosen, runtime, tenant, dataset.timeout)
            expected = _expected_error(case, run)
            if expected is not None:
                run.results.append(expected)
                _publish(runtime, case, run, expected, report.id, tenant)
            for ref in case.evaluators:
                sample = _sample(case, run, output, ref.arguments, schema, runtime)
                result = await _evaluate(specs[ref.name], sample)
                run.results.append(result)
                _publish(runtime, case, run, result, report.id, tenant)
        cases[case.name].runs.append(run)
        if progress is not None:
            progress(cases[case.name], run)

    with _fixtures(runtime, dataset.cases):
        async with anyio.create_task_group() as group:
            for index in range(repeat):
                for case in dataset.cases:
                    group.start_soon(job, case, index)
    for item in report.cases:
        item.runs.sort(key=lambda r: r.repeat)
    report.ended_at = time.time()
    return report


async def rescore(report: Report, *, host: PluginHost, dataset: Dataset | None = None) -> Report:
    """Judge a finished run's recorded outputs and events again, running nothing.

    :param dataset: take each case's ``expected``, ``metadata`` and evaluators from here (an edited
        case file); default: the ones the report recorded.
    Evaluators that call a model (``needs_model``) keep their recorded result.
    """
    specs = evaluator_specs(host)
    new = report.model_copy(deep=True)
    new.id, new.rescored_from, new.started_at = new_id("eval"), report.id, time.time()
    for item in new.cases:
        if dataset is not None:
            source = dataset.case(item.name)
            item.expected, item.metadata = to_json(source.expected), source.metadata
            item.evaluators, item.source = source.evaluators, source.source
            item.expected_error = source.expected_error
        case = item.as_case()
        _check([case], specs)
        for run in item.runs:
            previous: dict[str, list[EvalResult]] = {}
            for result in run.results:
                previous.setdefault(result.evaluator, []).append(result)
            results = []
            expected = _expected_error(case, run)
            if expected is not None:
                results.append(expected)
            for ref in case.evaluators:
                spec = specs[ref.name]
                if spec.needs_model:
                    kept = previous.get(ref.name) or []
                    results.append(
                        kept.pop(0)
                        if kept
                        else EvalResult(
                            evaluator=ref.name,
                            passed=False,
                            score=0.0,
                            reason="not judged: this evaluator calls a model; run 'keel eval run' to judge it",
                        )
                    )
                    continue
                results.append(
                    await _evaluate(spec, _sample(case, run, run.output, ref.arguments, new.output_schema, None))
                )
            run.results = results
    new.ended_at = time.time()
    return new
