"""Error codes, and the kernel's types for what executions report: interrupts and progress."""

from __future__ import annotations

import importlib
import pkgutil

import pydantic
import pytest

import keel
from keel.errors import CODE_PATTERN


def _keel_errors() -> list[type[keel.KeelError]]:
    for info in pkgutil.walk_packages(keel.__path__, prefix="keel."):
        importlib.import_module(info.name)
    found: dict[type, None] = {}
    todo = [keel.KeelError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found[sub] = None
            todo.append(sub)
    return [cls for cls in found if cls.__module__.startswith("keel.") and "tests" not in cls.__module__]


def test_every_kernel_error_declares_its_own_unique_code() -> None:
    errors = _keel_errors()
    assert len(errors) >= 20
    codes = [cls.code for cls in errors]
    for cls in errors:
        assert "code" in vars(cls), f"{cls.__qualname__} declares no code"
        assert CODE_PATTERN.match(cls.code), cls.code
    assert len(set(codes)) == len(codes), sorted(codes)
    assert "error" not in codes and keel.KeelError.code == "error"


def test_a_subclass_without_a_code_gets_one_from_its_package_and_name() -> None:
    class QuotaExceeded(keel.KeelError):
        pass

    class HTTPBadGateway(keel.StoreError):
        pass

    assert QuotaExceeded.code == f"{__name__.partition('.')[0]}.quota_exceeded"  # the top package, then the name
    assert HTTPBadGateway.code.endswith(".http_bad_gateway")


def test_a_malformed_code_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="lower-case snake words joined by dots"):

        class Bad(keel.KeelError):
            code = "Acme Quota"


def test_error_code_of_any_exception() -> None:
    assert keel.error_code(keel.ToolLoopLimit("too many", "max_tool_steps")) == "agent.tool_loop_limit"
    assert keel.error_code(keel.ActionDenied("no")) == "action.denied"
    assert keel.error_code(ValueError("bug")) == "internal"
    assert keel.error_code(None) == ""


def test_progress_is_validated_and_read_leniently() -> None:
    assert keel.Progress(message="half way", percent=50).percent == 50.0
    for bad in ({"message": ""}, {"message": "x", "percent": 101}, {"message": "x", "percent": float("nan")}):
        with pytest.raises(pydantic.ValidationError):
            keel.Progress(**bad)
    assert keel.Progress.read({"message": "step 2", "percent": 140}) == keel.Progress(message="step 2", percent=100)
    assert keel.Progress.read({"message": 3, "percent": True}) == keel.Progress(message="working")
    assert keel.Progress.read({"percent": float("inf")}).percent is None
    assert keel.Progress.read(None).message == "working"
    assert len(keel.Progress.read({"message": "x" * 900}).message) == 500


def test_interrupt_is_the_waiting_payload_item() -> None:
    item = keel.Interrupt(name="approve", payload={"message": "ok?", "schema": {"type": "boolean"}})
    dumped = item.model_dump(mode="json")
    assert dumped == {
        "name": "approve",
        "payload": {"message": "ok?", "schema": {"type": "boolean"}},
        "id": "",
        "path": "",
        "deadline": None,
    }
    assert keel.Interrupt.model_validate(dumped) == item
    with pytest.raises(pydantic.ValidationError):
        keel.Interrupt(name="")
    with pytest.raises(pydantic.ValidationError):
        keel.Interrupt.model_validate({"name": "a", "question": "extra keys are refused"})
