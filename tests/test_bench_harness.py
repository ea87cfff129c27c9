"""The benchmark harness's pure logic: statistics, target rules, result records, REPORT.md.

Fast: installs no peer, starts no process. `make bench` itself is never part of `make test`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def h():
    spec = importlib.util.spec_from_file_location("keel_bench_harness", BENCH / "harness.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def startup_figure(h):
    return h.Figure(
        figure="startup",
        group="1. startup",
        title="cold start",
        unit="ms",
        target="under 300 ms and faster than both agently and langgraph",
        rules=[h.keel_below(300.0), h.faster_than("agently"), h.faster_than("langgraph")],
        sides=[
            h.Side("keel", "keel", argv=["x"]),
            h.Side("agently", "agently", argv=["x"]),
            h.Side("langgraph", "langgraph", argv=["x"]),
            h.Side("floor", "keel", argv=["x"], reference=True),
        ],
        rounds=3,
    )


def test_result_schema_ratios_and_met_come_from_the_numbers(h):
    fig = startup_figure(h)
    result = h.build_result(
        fig,
        {
            "keel": [120.0, 100.0, 110.0],
            "agently": [600.0, 650.0, 640.0],
            "langgraph": [400.0, 500.0, 450.0],
            "floor": [9.0, 10.0, 11.0],
        },
        machine_info={"cores": 2, "cpu": "X"},
        versions={"keel": {"keel-kernel": "0.1"}},
    )
    for key in ("figure", "unit", "keel", "peers", "ratios", "target", "met", "machine", "versions"):
        assert key in result
    assert result["keel"] == 110.0
    assert result["peers"] == {"agently": 640.0, "langgraph": 450.0}  # the floor is no peer
    assert result["references"] == {"floor": 10.0}
    assert result["ratios"]["agently"] == pytest.approx(110 / 640)
    assert result["met"] is True
    assert json.loads(json.dumps(result)) == result

    slower = h.build_result(fig, {"keel": [460.0], "agently": [640.0], "langgraph": [450.0]})
    assert slower["met"] is False  # slower than langgraph, and over 300 ms
    just_langgraph = h.build_result(fig, {"keel": [200.0], "agently": [640.0], "langgraph": [190.0]})
    assert just_langgraph["met"] is False
    missing_peer = h.build_result(fig, {"keel": [100.0], "agently": [640.0]})
    assert missing_peer["peers"]["langgraph"] is None and missing_peer["ratios"]["langgraph"] is None
    assert missing_peer["met"] is False  # a rule about an unmeasured peer cannot hold


def test_not_built_keel_has_no_ratio_and_no_verdict(h):
    fig = startup_figure(h)
    result = h.build_result(fig, {"agently": [600.0], "langgraph": [400.0]}, not_built="No module named 'keel_x'")
    assert result["status"] == "not built"
    assert result["keel"] is None and result["met"] is None
    assert result["ratios"] == {"agently": None, "langgraph": None}
    assert result["peers"] == {"agently": 600.0, "langgraph": 400.0}


def test_rules(h):
    assert h.keel_below(0.5).check(0.4, {}) and not h.keel_below(0.5).check(0.5, {})
    assert h.ratio_at_most("p", 0.2).check(1.0, {"p": 5.0}) and not h.ratio_at_most("p", 0.2).check(1.1, {"p": 5.0})
    fastest = h.ratio_vs_fastest(["a", "b"], 0.5)
    assert fastest.check(1.0, {"a": 2.0, "b": 9.0}) and not fastest.check(1.0, {"a": 1.9, "b": 9.0})
    assert not fastest.check(1.0, {"a": 2.0})
    assert h.evaluate([], 1.0, {}) is None
    assert h.evaluate([h.keel_below(1)], None, {}) is None
    extra = h.extra_at_most("growth", 1.5)
    assert extra.check(1.0, {}, {"growth": 1.2}) and not extra.check(1.0, {}, {"growth": 2.0})
    assert not extra.check(1.0, {}, {})


def test_summarize_median_and_spread(h):
    s = h.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0 and s["n"] == 5
    assert s["iqr"] > 0
    with pytest.raises(ValueError):
        h.summarize([])


def test_parse_output(h):
    ok = h.parse_output(0, 'noise\nKEEL_BENCH_RESULT {"value": 1.5, "n": 3}\n', "")
    assert ok.value == 1.5 and ok.extra == {"n": 3}
    nb = h.parse_output(h.NOT_BUILT_EXIT, "KEEL_BENCH_NOT_BUILT No module named 'keel.instant'\n", "")
    assert nb.not_built == "No module named 'keel.instant'" and nb.value is None
    bad = h.parse_output(1, "", "Traceback\nValueError: boom\n")
    assert bad.error and "boom" in bad.error


def test_report_lists_every_figure_and_not_built_rows(h, tmp_path):
    fig = startup_figure(h)
    built = h.build_result(
        fig,
        {"keel": [100.0], "agently": [600.0], "langgraph": [400.0], "floor": [20.0]},
        machine_info={"cores": 2, "cpu": "AMD EPYC", "python": "3.11", "os": "Linux"},
        versions={"agently": {"agently": "4.1.4.10"}},
        date="2026-11-26T10:00:00Z",
    )
    older = dict(built, keel=999.0, date="2026-11-25T10:00:00Z")
    h.write_result(older, tmp_path)
    h.write_result(built, tmp_path)
    flow_fig = h.Figure(
        figure="flow.linear.memory",
        group="4. flow steps",
        title="linear",
        unit="us/step",
        target="in memory <= 1/10 of both peers",
        rules=[h.ratio_at_most("langgraph", 0.1)],
        sides=[h.Side("keel", "keel", code=""), h.Side("langgraph", "langgraph", code="")],
    )
    h.write_result(
        h.build_result(
            flow_fig, {"langgraph": [50.0]}, not_built="keel_triggerflow absent", date="2026-11-26T10:00:00Z"
        ),
        tmp_path,
    )
    latest = h.latest_results(tmp_path)
    assert [r["figure"] for r in latest] == ["startup", "flow.linear.memory"]
    assert latest[0]["keel"] == 100.0  # the newest startup result, not the older one
    text = h.render_report(latest, expected=[("8. gateway", "gateway.sse", "within 1.5x of bare FastAPI")])
    assert "AMD EPYC" in text and "2 cores" in text and "agently 4.1.4.10" in text
    assert "| agently | 600 (600-600, n=1) | 0.167 |" in text
    assert "under 300 ms and faster than both agently and langgraph" in text and "**met**" in text
    assert text.count("not built") >= 4  # flow (summary + section), gateway (summary + section)
    assert "gateway.sse" in text and "keel_triggerflow absent" in text
    assert "| gateway.sse | not built | - | within 1.5x of bare FastAPI | not built |" in text
    assert "| startup | 100 ms | agently 0.167, langgraph 0.25 |" in text
    assert "| langgraph | 50.0" in text
    # a floor shows the best ratio any implementation could reach against each peer
    assert "| floor (floor, not a peer) | 20.0" in text
    assert "Floor / peer (floor): agently 0.0333, langgraph 0.05: the best ratio possible" in text
