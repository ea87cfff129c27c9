"""Runnables and a scripted 'model' for keel-eval's tests: deterministic, offline, input-dependent.

The responder reads the request like a (very literal) model would: it extracts the invoice fields
with regular expressions, and it calls ``lookup_vendor`` before answering the vendor agent. With
``WORSE`` set it drops the vendor, as a worsened prompt might.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field

import keel
from keel.testing import Reply

SIDE_EFFECTS: list[str] = []
WORSE = {"on": False}


class Invoice(BaseModel):
    number: str = Field(description="the invoice number")
    vendor: str = Field(description="who issued it")
    due: str = Field(description="YYYY-MM-DD")
    total_eur: float = Field(ge=0)


invoice = keel.Agent("invoice", "Extract the invoice.", output=Invoice, max_retries=0)
#: the same agent with a deliberately worsened prompt: the responder below obeys it, as a model would
invoice_worse = keel.Agent(
    "invoice_worse", "Extract the invoice. Leave the vendor empty.", output=Invoice, max_retries=0
)
vendor = keel.Agent(
    "vendor", "Find the vendor's country.", output={"vendor": (str, "name"), "country": (str, "ISO code")},
    actions=["lookup_vendor"], max_retries=0,
)  # fmt: skip


@keel.action(risk="write")
def lookup_vendor(name: str) -> dict[str, str]:
    """Look a vendor up (a side effect the tests watch)."""
    SIDE_EFFECTS.append(name)
    return {"name": name, "country": "NO" if "AS" in name else "DE"}


def extract(text: str) -> dict[str, Any]:
    number = re.search(r"(?:Invoice|Bill|Rechnung)(?: no\.)? ([A-Z0-9-]+)", text)
    vendor_name = re.search(r"(?:from|by|von) ([A-Z][\w&.]*(?: [A-Z&][\w.]*)*)", text)
    due = re.search(r"(\d{4}-\d{2}-\d{2})", text)
    total = re.findall(r"(\d[\d,]*\.\d{2}) EUR", text)
    count = re.search(r"(\d+) \w+ at", text)
    amount = float(total[-1].replace(",", "")) if total else 0.0
    if count:
        amount *= int(count.group(1))
    return {
        "number": number.group(1) if number else "",
        "vendor": "" if WORSE["on"] else (vendor_name.group(1) if vendor_name else ""),
        "due": due.group(1) if due else "",
        "total_eur": round(amount, 2),
    }


def respond(request: keel.ModelRequest) -> str | Reply:
    user = next(m.content for m in request.messages if m.role == "user")
    tools = [m for m in request.messages if m.role == "tool"]
    if request.tools:  # the vendor agent
        if not tools:
            name = json.loads(user)["vendor"] if user.startswith("{") else user
            return Reply(tool_calls=[keel.ToolCall(id="c1", name="lookup_vendor", arguments={"name": name})])
        found = json.loads(tools[-1].content)
        return json.dumps({"vendor": found["name"], "country": found["country"]})
    if "judge" in request.messages[0].content:
        shown = json.loads(user)
        good = bool(shown.get("output", {}).get("vendor"))
        return json.dumps(
            {
                "label": "pass" if good else "fail",
                "score": 1.0 if good else 0.0,
                "reason": "vendor named" if good else "no vendor",
            }
        )
    answer = extract(user)
    if "Leave the vendor empty" in request.messages[0].content:
        answer["vendor"] = ""
    return json.dumps(answer)


def respond_broken(request: keel.ModelRequest) -> str:
    raise AssertionError("no model call was expected")
