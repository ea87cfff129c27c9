"""The DevTools UI's JSON API: the executions list, one execution, its events (the live follow polls these)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from keel_devtools.markup import PAGE_SIZE, db_of, filters_of, number, summary_text

__all__ = ["api_event", "api_events", "api_execution", "api_list"]


async def api_list(request: Request) -> Response:
    db = db_of(request)
    rows, cursor = db.page(
        filters_of(request),
        limit=min(int(request.query_params.get("limit", PAGE_SIZE)), 500),
        before=request.query_params.get("before") or None,
    )
    return JSONResponse({"executions": rows, "next": cursor})


async def api_execution(request: Request) -> Response:
    db = db_of(request)
    summary = db.execution(request.path_params["execution_id"])
    return JSONResponse(summary) if summary else JSONResponse({"error": "not found"}, status_code=404)


async def api_events(request: Request) -> Response:
    db = db_of(request)
    execution_id = request.path_params["execution_id"]
    summary = db.execution(execution_id)
    if summary is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    after = number(request.query_params.get("after"), int) or 0
    rows = db.events(execution_id, after=after, limit=2000)
    events = [
        {"seq": r["seq"], "time": r["time"], "step": r["step"], "kind": r["kind"],
         "summary": summary_text(r["kind"], r["event"].get("payload") or {})[:160]}
        for r in rows
    ]  # fmt: skip
    return JSONResponse({"execution": summary, "events": events})


async def api_event(request: Request) -> Response:
    db = db_of(request)
    execution_id = request.path_params["execution_id"]
    seq = int(request.path_params["seq"])
    rows = db.events(execution_id, after=seq - 1, limit=1)
    if not rows or rows[0]["seq"] != seq:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse({"step": rows[0]["step"], "cost": rows[0]["cost"], **rows[0]["event"]})
