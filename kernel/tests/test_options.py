"""keel.parse_options / keel.validation_problems: one error style for every plugin's options."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import keel


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    path: str = "x.db"
    size: int = Field(default=1, ge=1)
    schema_name: str = Field(default="keel", alias="schema")


def test_valid_options_and_none_give_the_model() -> None:
    assert keel.parse_options(Options, {"size": 3}, where="store 'x'").size == 3
    assert keel.parse_options(Options, None, where="store 'x'") == Options()


def test_every_problem_the_place_and_the_valid_keys_on_one_line() -> None:
    with pytest.raises(keel.StoreError) as info:
        keel.parse_options(Options, {"pathh": "y", "size": 0}, where="store 'x'", error=keel.StoreError)
    text = str(info.value)
    assert text.startswith("store 'x': invalid options (")
    assert "pathh: Extra inputs are not permitted" in text
    assert "size: Input should be greater than or equal to 1" in text
    assert text.endswith("Valid options: path, size, schema")  # the alias a user writes, not the field
    assert isinstance(info.value.__cause__, ValidationError)


def test_stack_error_by_default_and_the_root_name_for_a_whole_value_problem() -> None:
    with pytest.raises(keel.StackError, match=r"^env 'e': invalid options \(\(options\): Input should be"):
        keel.parse_options(Options, "not a dict", where="env 'e'")  # type: ignore[arg-type]
    try:
        Options.model_validate([1])
    except ValidationError as err:
        assert keel.validation_problems(err, root="(arguments)").startswith("(arguments): ")
