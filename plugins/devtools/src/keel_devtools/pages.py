"""The DevTools UI's HTML pages: the executions list, one execution, and the compare view."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keel_devtools.db import RecordingDB
from keel_devtools.flowgraph import flow_drawing, path_taken, render_svg
from keel_devtools.markup import FINISHED, PAGE_SIZE, db_of, esc, filters_of, missing, page, summary_text, when
from keel_devtools.views import align, step_tree, waterfall

__all__ = ["compare_page", "execution_page", "index"]


async def index(request: Request) -> Response:
    """``/``: the executions, newest first, filtered and paged; pick two to compare."""
    db = db_of(request)
    filters = filters_of(request)
    before = request.query_params.get("before") or None
    rows, cursor = db.page(filters, limit=PAGE_SIZE, before=before)
    total = db.count(filters)
    q = request.query_params
    statuses = "".join(
        f"<option {'selected' if q.get('status') == s else ''}>{s}</option>"
        for s in ("", "running", "waiting", "completed", "failed", "cancelled")
    )
    runnables = "".join(
        f"<option {'selected' if q.get('runnable') == r else ''}>{esc(r)}</option>" for r in ["", *db.runnables()]
    )
    form = (
        "<form class=filters id=filters method=get>"
        f"<label>status<select name=status id=f-status>{statuses}</select></label>"
        f"<label>runnable<select name=runnable id=f-runnable>{runnables}</select></label>"
        f"<label>tenant<input name=tenant value='{esc(q.get('tenant'))}' size=8></label>"
        f"<label>since (UTC)<input name=since value='{esc(q.get('since'))}' placeholder=2026-12-01 size=10></label>"
        f"<label>min tokens<input name=min_tokens value='{esc(q.get('min_tokens'))}' size=6></label>"
        f"<label>min cost $<input name=min_cost value='{esc(q.get('min_cost'))}' size=6></label>"
        f"<label>error contains<input name=error value='{esc(q.get('error'))}' size=12 placeholder='* = any'></label>"
        "<label>&nbsp;<button id=apply>filter</button></label>"
        "<label>&nbsp;<button type=button id=compare disabled>compare 2 selected</button></label></form>"
    )
    body_rows = []
    for r in rows:
        tokens = r["input_tokens"] + r["output_tokens"]
        duration = f"{(r['ended_at'] - r['started_at']):.3f}s" if r["ended_at"] and r["started_at"] else ""
        lost = r["dropped"] + r["missing"]
        body_rows.append(
            f"<tr data-id='{esc(r['id'])}'><td><input type=checkbox class=pick value='{esc(r['id'])}'></td>"
            f"<td><a href='/executions/{esc(r['id'])}'>{esc(r['id'])}</a></td><td>{esc(r['runnable'])}</td>"
            f"<td>{esc(r['kind'])}</td><td class='{esc(r['status'])}'>{esc(r['status'])}</td>"
            f"<td>{when(r['started_at'])}</td><td>{duration}</td><td>{r['events']}</td><td>{tokens}</td>"
            f"<td>${r['cost']:.6f}</td><td>{lost or ''}</td><td>{esc((r['error'] or '')[:80])}</td></tr>"
        )
    args = {k: v for k, v in q.items() if k != "before" and v}
    nav = ""
    if cursor:
        from urllib.parse import urlencode

        nav = f"<p><a id=next href='/?{esc(urlencode({**args, 'before': cursor}))}'>next page →</a></p>"
    table = (
        f"<p><b id=total>{total}</b> executions{' (filtered)' if args else ''}; newest first.</p>"
        "<table id=executions><thead><tr><th></th><th>execution</th><th>runnable</th><th>kind</th><th>status</th>"
        "<th>started (UTC)</th><th>duration</th><th>events</th><th>tokens</th><th>cost</th><th>lost</th>"
        f"<th>error</th></tr></thead><tbody>{''.join(body_rows)}</tbody></table>{nav}"
    )
    script = """
const picks=()=>[...document.querySelectorAll('.pick:checked')].map(x=>x.value);
document.querySelectorAll('.pick').forEach(b=>b.addEventListener('change',()=>{
  document.getElementById('compare').disabled=picks().length!==2;}));
document.getElementById('compare').addEventListener('click',()=>{const [a,b]=picks();
  location.href='/compare?a='+encodeURIComponent(a)+'&b='+encodeURIComponent(b);});
"""
    return page("executions", f"<h2>Executions</h2>{form}{table}", script)


def _cards(summary: dict[str, Any], span: float) -> str:
    """The summary cards at the top of an execution's page."""
    return "".join(
        f"<div class=card>{label}<b id='{key}'>{value}</b></div>"
        for key, label, value in [
            ("status", "status", f"<span class='{esc(summary['status'])}'>{esc(summary['status'])}</span>"),
            ("runnable", "runnable", esc(summary["runnable"])),
            ("event-count", "events", summary["events"]),
            ("tokens", "tokens", f"{summary['input_tokens']} in / {summary['output_tokens']} out"),
            ("cost", "cost", f"${summary['cost']:.6f}" + (" (some unpriced)" if summary["unpriced"] else "")),
            ("duration", "duration", f"{span * 1000:.1f} ms"),
            ("lost", "lost events", f"{summary['dropped']} dropped, {summary['missing']} missing"),
        ]
    )


def _bars(rows: list[dict[str, Any]], first: float, span: float) -> str:
    """The timeline: one waterfall bar per model call, action, step and wait."""
    bars = []
    for bar in waterfall(rows):
        left = (bar.start - first) / span * 100
        width = max((bar.end - bar.start) / span * 100, 0.2)
        title = f"{bar.label} {bar.status} {(bar.end - bar.start) * 1000:.2f} ms {bar.detail}"
        bars.append(
            f"<div class=wf-row data-kind='{bar.kind}'><div class=wf-label title='{esc(title)}'>{esc(bar.label)}"
            f" <span class=muted>{(bar.end - bar.start) * 1000:.1f} ms</span></div><div class=wf-track>"
            f"<div class='bar {bar.kind} {bar.status}' style='left:{left:.3f}%;width:{width:.3f}%' "
            f"title='{esc(title)}'></div></div></div>"
        )
    return "".join(bars)


def _steps(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The step tree's rows, then the total."""
    tree = "".join(
        f"<tr><td style='padding-left:{8 + 16 * s.depth}px'>{esc(s.step.split('/')[-1])}</td><td>{s.events}</td>"
        f"<td>{s.input_tokens}/{s.output_tokens}</td><td>${s.cost:.6f}</td><td class=muted>"
        f"{esc(', '.join(s.kinds))}</td></tr>"
        for s in step_tree(rows)
    )
    tree += (
        f"<tr><th>total</th><th>{summary['events']}</th><th>{summary['input_tokens']}/"
        f"{summary['output_tokens']}</th><th>${summary['cost']:.6f}</th><th></th></tr>"
    )
    return tree


def _events(rows: list[dict[str, Any]], first: float) -> str:
    """The events table's rows (the inspector fetches one event's whole JSON on click)."""
    return "".join(
        f"<tr class=clickable data-seq='{r['seq']}'><td>{r['seq']}</td><td>{(r['time'] - first) * 1000:.2f}</td>"
        f"<td>{esc(r['step'])}</td><td>{esc(r['kind'])}</td>"
        f"<td>{esc(summary_text(r['kind'], r['event'].get('payload') or {})[:160])}</td></tr>"
        for r in rows
    )


def _related(db: RecordingDB, execution_id: str, summary: dict[str, Any]) -> str:
    """Links to the executions in the same trace (a flow and the agents it ran)."""
    related = db.same_trace(execution_id)
    links = "".join(
        f"<li data-related='{esc(r['id'])}'>{'inside this flow: ' if summary['kind'] == 'flow' else ''}"
        f"{'part of flow ' if r['kind'] == 'flow' else ''}<a href='/executions/{esc(r['id'])}'>{esc(r['runnable'])}"
        f" <code>{esc(r['id'])}</code></a> <span class='{esc(r['status'])}'>{esc(r['status'])}</span></li>"
        for r in related
    )
    return f"<h3>in the same trace</h3><ul id=related>{links}</ul>" if links else ""


def _flow(rows: list[dict[str, Any]]) -> str:
    """A flow's drawing with the path taken, or nothing for an agent."""
    drawing = flow_drawing(rows)
    return (
        f"<h3>flow: the path taken</h3><div class=flow-box>{render_svg(drawing, path_taken(drawing, rows))}</div>"
        if drawing is not None
        else ""
    )


async def execution_page(request: Request) -> Response:
    """``/executions/{id}``: cards, timeline, steps, events, and a live follow while it runs."""
    db = db_of(request)
    execution_id = request.path_params["execution_id"]
    summary = db.execution(execution_id)
    if summary is None:
        return missing(execution_id)
    rows = db.events(execution_id)
    first = rows[0]["time"] if rows else 0.0
    span = max((rows[-1]["time"] - first) if rows else 0.0, 1e-6)
    cards = _cards(summary, span)
    bars = _bars(rows, first, span)
    tree = _steps(rows, summary)
    events = _events(rows, first)
    error_box = f"<pre class=failed id=error>{esc(summary['error'])}</pre>" if summary["error"] else ""
    related_box = _related(db, execution_id, summary)
    flow_box = _flow(rows)
    body = (
        f"<h2>{esc(summary['kind'])} <code>{esc(execution_id)}</code></h2><div class=cards>{cards}</div>"
        f"<div class=grid><div><h3>input</h3><pre id=input>{esc(json.dumps(summary['input'], indent=1, ensure_ascii=False))}</pre></div>"
        f"<div><h3>output</h3><pre id=output>{esc(json.dumps(summary['output'], indent=1, ensure_ascii=False))}</pre>"
        f"{error_box}</div></div>"
        f"{related_box}{flow_box}<h3>timeline</h3><div class=wf id=waterfall>{bars}</div>"
        f"<div class=grid><div><h3>steps</h3><table id=steps><thead><tr><th>step</th><th>events</th>"
        f"<th>tokens in/out</th><th>cost</th><th>kinds</th></tr></thead><tbody>{tree}</tbody></table></div>"
        f"<div><h3>event inspector</h3><pre id=inspector class=muted>click an event</pre></div></div>"
        f"<h3>events</h3><table id=events><thead><tr><th>seq</th><th>ms</th><th>step</th><th>kind</th>"
        f"<th>summary</th></tr></thead><tbody>{events}</tbody></table>"
    )
    script = (
        f"const ID={json.dumps(execution_id)};const FIRST={first!r};let last={rows[-1]['seq'] or 0 if rows else 0};"
        f"let status={json.dumps(summary['status'])};const FINISHED={json.dumps(list(FINISHED))};" + _FOLLOW_JS
    )
    return page(execution_id, body, script)


_FOLLOW_JS = """
const esc=s=>String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const body=document.querySelector('#events tbody');
body.addEventListener('click',async e=>{const tr=e.target.closest('tr');if(!tr)return;
  const r=await fetch('/api/executions/'+encodeURIComponent(ID)+'/events/'+tr.dataset.seq);
  const ev=await r.json();const box=document.getElementById('inspector');box.classList.remove('muted');
  box.textContent=JSON.stringify(ev,null,2);});
async function follow(){
  if(FINISHED.includes(status))return;
  try{const r=await fetch('/api/executions/'+encodeURIComponent(ID)+'/events?after='+last);const data=await r.json();
    for(const row of data.events){last=Math.max(last,row.seq||0);const tr=document.createElement('tr');
      tr.className='clickable';tr.dataset.seq=row.seq;
      tr.innerHTML='<td>'+row.seq+'</td><td>'+((row.time-FIRST)*1000).toFixed(2)+'</td><td>'+esc(row.step)+
        '</td><td>'+esc(row.kind)+'</td><td>'+esc(row.summary)+'</td>';body.appendChild(tr);}
    const s=data.execution;status=s.status;const st=document.getElementById('status');
    st.innerHTML='<span class="'+esc(s.status)+'">'+esc(s.status)+'</span>';
    document.getElementById('event-count').textContent=s.events;
    if(FINISHED.includes(status)){setTimeout(()=>location.reload(),300);return;}
  }catch(err){}
  setTimeout(follow,400);}
follow();
"""


async def compare_page(request: Request) -> Response:
    """``/compare?a=..&b=..``: two executions aligned step by step, the first divergence marked."""
    db = db_of(request)
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    sa, sb = db.execution(a), db.execution(b)
    if sa is None or sb is None:
        return missing(a if sa is None else b)
    result = align(db.events(a), db.events(b))
    first = result["first_divergence"]
    if first is None:
        verdict = "<div id=first-divergence class=completed>no divergence: the two executions did the same, step by step</div>"
    else:
        verdict = (
            f"<div id=first-divergence><b>first divergence at <code id=divergence-step>{esc(first['step'])}</code></b>"
            f" {esc(first['where'])}<div class=grid><pre>{esc(json.dumps(first['expected'], indent=1, ensure_ascii=False, default=str))}</pre>"
            f"<pre>{esc(json.dumps(first['got'], indent=1, ensure_ascii=False, default=str))}</pre></div></div>"
        )
    rows = []
    for step in result["steps"]:
        is_first = first is not None and step["step"] == first["step"]
        attrs = " id=step-first" if is_first else ""
        cls = "" if step["same"] else "differs"
        diff = f"<pre class=diff>{esc(step['diff'])}</pre>" if step["diff"] else ""
        rows.append(
            f"<tr class='{cls}'{attrs} data-step='{esc(step['step'])}'><td>{esc(step['step'])}</td>"
            f"<td><pre>{esc(step['a'])}</pre></td><td><pre>{esc(step['b'])}</pre>{diff}</td></tr>"
        )
    head = "".join(
        f"<div class=card>{label}<b><a href='/executions/{esc(s['id'])}'>{esc(s['id'])}</a></b>"
        f"{esc(s['runnable'])} · <span class='{esc(s['status'])}'>{esc(s['status'])}</span> · "
        f"{s['input_tokens'] + s['output_tokens']} tokens · ${s['cost']:.6f}</div>"
        for label, s in (("A", sa), ("B", sb))
    )
    body = (
        f"<h2>Compare</h2><div class=cards>{head}</div>{verdict}<table id=aligned><thead><tr><th>step</th>"
        f"<th>A</th><th>B</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    script = "const f=document.getElementById('step-first');if(f)f.scrollIntoView({block:'center'});"
    return page("compare", body, script)
