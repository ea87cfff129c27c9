"""Issue 17 for the plugins (kernel/tests/test_sizes.py guards the kernel): no file under plugins/
over 600 lines and no function over 80 (def to last line, docstring included), unless the file says
why in a ``# Size (issue 17):`` note."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

MAX_FILE, MAX_FUNCTION = 600, 80
NOTE = "# Size (issue 17):"


def too_big(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if NOTE in text:
        return []
    found = [f"{path.relative_to(root)}: {text.count(chr(10))} lines"] if text.count("\n") > MAX_FILE else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_plugin_file_or_function_is_too_big_without_saying_why() -> None:
    found = [item for path in sorted((ROOT / "plugins").glob("*/**/*.py")) for item in too_big(path)]
    assert not found, (
        f"over {MAX_FILE} lines a file or {MAX_FUNCTION} a function (issue 17): {found}; split it, "
        f"or say why in a {NOTE!r} comment in the file"
    )


def test_the_check_sees_a_long_file_a_long_function_and_the_note(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text("\n".join(f"x{i} = {i}" for i in range(MAX_FILE + 1)) + "\n", encoding="utf-8")
    assert too_big(long, tmp_path) == [f"long.py: {MAX_FILE + 1} lines"]
    body = "\n".join(f"    y{i} = {i}" for i in range(MAX_FUNCTION))
    (tmp_path / "fn.py").write_text(f"def f():\n{body}\n", encoding="utf-8")
    assert too_big(tmp_path / "fn.py", tmp_path) == [f"fn.py:1 f: {MAX_FUNCTION + 1} lines"]
    long.write_text(f"{NOTE} a generated table\n" + long.read_text(encoding="utf-8"), encoding="utf-8")
    assert too_big(long, tmp_path) == []
