"""@keel.action: schemas from signatures, validation, timeouts, sync handlers off the loop."""

from __future__ import annotations

import threading
import time
from typing import Literal

import anyio
import pytest
from pydantic import BaseModel

import keel


class Address(BaseModel):
    city: str
    zip: str | None = None


@keel.action(risk="write", tags=["crm"], redact=["token"])
async def add_note(customer_id: int, text: str, address: Address | None = None, token: str = "") -> dict[str, object]:
    """Attach a note to a customer record."""
    return {"customer_id": customer_id, "chars": len(text), "city": address.city if address else None}


def test_schema_from_signature_and_docstring() -> None:
    assert add_note.name == "add_note"
    assert add_note.description == "Attach a note to a customer record."
    schema = add_note.parameters
    assert schema["type"] == "object"
    assert schema["required"] == ["customer_id", "text"]
    assert schema["properties"]["customer_id"]["type"] == "integer"
    assert schema["additionalProperties"] is False
    assert add_note.risk == "write" and add_note.tags == {"crm"} and add_note.redact == {"token"}
    assert add_note.tool_schema().parameters == schema


async def test_invoke_validates_and_coerces() -> None:
    result = await keel.invoke_action(add_note, {"customer_id": "7", "text": "hi", "address": {"city": "Oslo"}})
    assert result == {"customer_id": 7, "chars": 2, "city": "Oslo"}


async def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(keel.ActionInputError, match=r"customer_id: .*integer"):
        await keel.invoke_action(add_note, {"customer_id": "seven", "text": "x"})
    with pytest.raises(keel.ActionInputError, match=r"text: Field required"):
        await keel.invoke_action(add_note, {"customer_id": 1})


async def test_sync_handlers_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    @keel.action
    def which_thread() -> int:
        """Report the thread."""
        return threading.get_ident()

    assert await keel.invoke_action(which_thread, {}) != loop_thread


async def test_timeout() -> None:
    @keel.action(timeout=0.05)
    async def hang() -> None:
        """Never returns."""
        await anyio.sleep(10)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await keel.invoke_action(hang, {})
    assert time.monotonic() - started < 5


def test_literal_and_name_override() -> None:
    @keel.action(name="set-mode", risk="irreversible", visible_to=["ops"])
    def set_mode(mode: Literal["on", "off"]) -> str:
        """Switch."""
        return mode

    assert set_mode.name == "set-mode"
    assert set_mode.parameters["properties"]["mode"]["enum"] == ["on", "off"]
    assert set_mode.visible_to == {"ops"}


def test_varargs_cannot_be_described() -> None:
    with pytest.raises(keel.ActionError, match=r"\*args"):

        @keel.action
        def bad(*items: int) -> None:
            """Bad."""


def test_invalid_action_name_is_refused() -> None:
    with pytest.raises(ValueError, match="name"):

        @keel.action(name="has space")
        def f() -> None:
            """F."""
