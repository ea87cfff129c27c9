"""Case files: what loads, and the errors for what does not (file, case and field named)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from keel_eval import CaseError, load_dataset
from keel_eval.cases import SCHEMA_FILE, case_schema, parse_evaluator


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_dataset_file_merges_its_evaluators_into_each_case() -> None:
    dataset = load_dataset(DATA / "invoices.yaml")
    assert dataset.name == "invoices" and dataset.runnable == "invoice"
    nordlys = dataset.case("nordlys")
    assert [e.name for e in nordlys.evaluators] == ["schema", "equals", "numeric", "max_model_requests", "equals"]
    assert nordlys.evaluators[2].arguments == {"path": "total_eur", "abs": 0.01}
    assert nordlys.source.endswith("invoices.yaml")


def test_a_folder_is_a_dataset_of_its_files_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b/two.yaml", "name: two\ninput: b\nexpected: b\n")
    write(tmp_path, "a.yml", "name: one\ninput: a\nevaluators: [{contains: {value: a}}]\n")
    write(tmp_path, "notes.txt", "not a case")
    dataset = load_dataset(tmp_path)
    assert [c.name for c in dataset.cases] == ["one", "two"]
    assert dataset.case("two").evaluators[0].name == "equals"  # expected and no evaluators: equals


def test_a_missing_field_names_the_file_the_case_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path, "d.yaml", "cases:\n  - name: first\n    input: x\n    expected: x\n  - name: second\n    expectd: y\n"
    )
    with pytest.raises(CaseError) as err:
        load_dataset(path)
    message = str(err.value)
    assert f"{path}: case 'second': input: Field required" in message
    assert "case 'second': expectd: Extra inputs are not permitted" in message


def test_other_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    cases = {
        "list.yaml": ("- a\n- b\n", "a case file is a mapping"),
        "broken.yaml": ("name: [unclosed\n", "not valid YAML"),
        "dup.yaml": (
            "cases:\n  - {name: a, input: 1, expected: 1}\n  - {name: a, input: 2, expected: 2}\n",
            "names must be unique",
        ),
        "nojudge.yaml": ("name: lonely\ninput: hi\n", "nothing judges this case"),
        "args.yaml": ("name: c\ninput: x\nevaluators: [{equals: 3}]\n", "takes its arguments as a mapping"),
        "two.yaml": ("name: c\ninput: x\nevaluators: [{equals: {}, regex: {}}]\n", "one name with its arguments"),
        "empty.yaml": ("cases: []\n", "has no cases"),
    }
    for name, (text, expected) in cases.items():
        path = write(tmp_path / name.split(".")[0], name, text)
        with pytest.raises(CaseError, match=expected) as err:
            load_dataset(path)
        assert str(path) in str(err.value)
    with pytest.raises(CaseError, match="no such case file"):
        load_dataset(tmp_path / "missing.yaml")


def test_the_shipped_schema_is_the_generated_one_and_accepts_the_example_datasets() -> None:
    shipped = json.loads(SCHEMA_FILE.read_text())
    assert shipped == case_schema(), "regenerate: keel eval schema -o plugins/eval/src/keel_eval/case.schema.json"
    root = Path(__file__).resolve().parents[3]
    files = [*sorted((root / "examples" / "evals").glob("*.yaml")), *sorted(DATA.glob("*.yaml"))]
    assert files
    for file in files:
        jsonschema.validate(yaml.safe_load(file.read_text()), shipped)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "input": 1, "evaluatorz": []}, shipped)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
        max_leaves=12,
    )
)
def test_any_yaml_value_either_loads_or_is_a_case_error(tmp_path_factory: pytest.TempPathFactory, data: object) -> None:
    path = tmp_path_factory.mktemp("h") / "case.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        dataset = load_dataset(path)
    except CaseError as err:
        assert str(path) in str(err)
    else:
        assert dataset.cases and all(c.evaluators for c in dataset.cases)


def test_evaluator_entries() -> None:
    assert parse_evaluator("schema", "w").name == "schema"
    assert parse_evaluator({"judge": None}, "w").arguments == {}
    assert parse_evaluator({"regex": {"pattern": "x"}}, "w").label() == "regex(pattern='x')"
