"""Output contracts: the dict shorthand, parsing with repair, validation errors, ensure_keys."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel

import keel
from keel.output import contract_model

INVOICE = {
    "vendor": (str, "who issued the invoice"),
    "total": (float, "total in EUR", {"ge": 0}),
    "status": (Literal["open", "paid"], "payment status"),
    "lines": [{"item": (str, "what was sold"), "qty": ("int", "how many", {"ge": 1})}],
    "customer": {"name": (str, "customer name"), "vat_id": ("str?", "VAT number if printed")},
    "tags": [str],
    "priority": ("str", "how urgent", {"enum": ["low", "high"]}),
}

GOOD = {
    "vendor": "Nordlys AS",
    "total": 360.0,
    "status": "open",
    "lines": [{"item": "licence", "qty": 3}],
    "customer": {"name": "Acme"},
    "tags": [],
    "priority": "low",
}


@pytest.fixture
def contract() -> keel.OutputContract:
    return keel.OutputContract.of(INVOICE, ensure_keys=["lines[*].item", "vendor"])


def test_shorthand_becomes_a_pydantic_model_with_required_fields_enums_and_constraints(
    contract: keel.OutputContract,
) -> None:
    schema = contract.json_schema
    assert set(schema["required"]) == {"vendor", "total", "status", "lines", "customer", "tags", "priority"}
    assert schema["properties"]["vendor"]["description"] == "who issued the invoice"
    assert schema["properties"]["total"]["minimum"] == 0
    assert schema["properties"]["status"]["enum"] == ["open", "paid"]
    assert schema["properties"]["priority"]["enum"] == ["low", "high"]
    assert schema["properties"]["tags"] == {"items": {"type": "string"}, "title": "Tags", "type": "array"}
    lines = schema["$defs"][schema["properties"]["lines"]["items"]["$ref"].split("/")[-1]]
    assert lines["properties"]["qty"]["type"] == "integer"
    customer = schema["$defs"]["Customer"]
    assert customer["required"] == ["name"]  # vat_id is optional ("str?")
    data = contract.model.model_validate(GOOD)
    assert data.customer.vat_id is None  # type: ignore[attr-defined]


def test_a_pydantic_model_is_used_as_is() -> None:
    class Person(BaseModel):
        name: str

    contract = keel.OutputContract.of(Person)
    assert contract.model is Person
    assert contract.name == "Person"
    assert keel.OutputContract.of(contract) is contract


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"a": ("strng", "typo")}, "unknown type name 'strng'"),
        ({"a": 42}, r"must be \(type, 'description'\)"),
        ({"a": (str, "x", {"minimum": 1})}, "unknown constraint"),
    ],
)
def test_a_bad_shorthand_says_what_is_wrong(spec: dict[str, object], message: str) -> None:
    with pytest.raises(keel.KeelError, match=message):
        contract_model(spec)


def test_a_strict_answer_is_validated_without_repair(contract: keel.OutputContract) -> None:
    check = contract.check(json.dumps(GOOD))
    assert check.ok and not check.repaired
    assert check.data is not None and check.data.vendor == "Nordlys AS"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        "Here is the invoice:\n" + json.dumps(GOOD) + "\nLet me know if you need {anything} else.",
        json.dumps(GOOD).replace('"qty": 3}', '"qty": 3},').replace('"low"}', '"low",}'),
        json.dumps(GOOD)[:-1],  # cut off before the closing brace
    ],
    ids=["fenced", "trailing-prose", "trailing-commas", "unclosed"],
)
def test_repair_path(contract: keel.OutputContract, text: str) -> None:
    check = contract.check(text)
    assert check.errors == []
    assert check.repaired
    assert check.data is not None and check.data.model_dump(exclude_none=True) == {
        **GOOD,
        "customer": {"name": "Acme"},
    }


def test_validation_errors_name_the_field(contract: keel.OutputContract) -> None:
    bad = {**GOOD, "status": "shut", "lines": [{"item": "x", "qty": 0}]}
    check = contract.check(json.dumps(bad))
    assert not check.ok
    assert any(e.startswith("status: Input should be 'open' or 'paid'") for e in check.errors)
    assert any(e.startswith("lines[0].qty: Input should be greater than or equal to 1") for e in check.errors)
    feedback = contract.feedback(check.errors)
    assert "lines[0].qty" in feedback and "JSON" in feedback


def test_text_that_is_no_json_at_all_fails_validation(contract: keel.OutputContract) -> None:
    check = contract.check("Sorry, I cannot help with that.")
    assert not check.ok and check.errors


def test_ensure_keys_rejects_missing_and_empty_values(contract: keel.OutputContract) -> None:
    empty_item = {**GOOD, "lines": [{"item": "licence", "qty": 1}, {"item": "", "qty": 2}]}
    check = contract.check(json.dumps(empty_item))
    assert check.errors == ["lines[1].item: must be present and not empty (ensure_keys)"]
    no_lines = {**GOOD, "lines": []}
    assert contract.check(json.dumps(no_lines)).errors == ["lines: must be present and not empty (ensure_keys)"]
    blank_vendor = {**GOOD, "vendor": ""}
    assert contract.check(json.dumps(blank_vendor)).errors == ["vendor: must be present and not empty (ensure_keys)"]


def test_ensure_keys_reaches_optional_fields_and_indexes() -> None:
    contract = keel.OutputContract.of(INVOICE, ensure_keys=["customer.vat_id", "lines[0].qty"])
    assert contract.check(json.dumps(GOOD)).errors == ["customer.vat_id: must be present and not empty (ensure_keys)"]
    ok = {**GOOD, "customer": {"name": "Acme", "vat_id": "NO123"}}
    assert contract.check(json.dumps(ok)).ok


def test_an_unreadable_ensure_keys_path_is_an_error() -> None:
    with pytest.raises(keel.KeelError, match="cannot read the path"):
        keel.OutputContract.of(INVOICE, ensure_keys=["lines[x]"])


def test_instructions_describe_the_schema_and_the_required_keys(contract: keel.OutputContract) -> None:
    text = contract.instructions
    assert "one JSON object" in text
    assert json.dumps(contract.json_schema, separators=(",", ":")) in text
    assert "lines[*].item" in text
    assert contract.instructions is text  # built once
