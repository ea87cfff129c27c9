"""Issue 17 for the kernel: no file over 600 lines and no function over 80 lines (def to last line,
docstring included), unless the file says why in a ``# Size (issue 17):`` note."""

from __future__ import annotations

import ast
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[1]
MAX_FILE, MAX_FUNCTION = 600, 80
NOTE = "# Size (issue 17):"


def _too_big(path: Path, root: Path = KERNEL) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if NOTE in text:
        return []
    found = []
    lines = text.count("\n")
    if lines > MAX_FILE:
        found.append(f"{path.relative_to(root)}: {lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_kernel_file_or_function_is_too_big_without_saying_why() -> None:
    found = [item for path in sorted(KERNEL.glob("*/**/*.py")) for item in _too_big(path)]
    assert not found, (
        f"over {MAX_FILE} lines a file or {MAX_FUNCTION} a function (issue 17): {found}; split it, "
        f"or say why in a {NOTE!r} comment in the file"
    )


def test_the_check_sees_a_long_function_and_the_note(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION))
    long = tmp_path / "long.py"
    long.write_text(f"def long():\n{body}\n", encoding="utf-8")
    assert _too_big(long, tmp_path) == [f"long.py:1 long: {MAX_FUNCTION + 1} lines"]
    long.write_text(f"{NOTE} generated on purpose\ndef long():\n{body}\n", encoding="utf-8")
    assert _too_big(long, tmp_path) == []
