"""What src/dms may import: nothing private of another package (an AST check of every import statement)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "dms"


def private_imports(source: str) -> list[str]:
    """Each import in ``source`` of a ``_``-prefixed module or name from a package other than DMS."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module != "__future__":
            if node.module.split(".")[0] == "dms":
                continue
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module}")
            found += [f"line {node.lineno}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != "dms" and any(part.startswith("_") for part in parts):
                    found.append(f"line {node.lineno}: import {alias.name}")
    return found


def test_no_module_imports_anything_private_of_another_package():
    offenders = {
        str(path.relative_to(SRC)): found
        for path in SRC.rglob("*.py")
        if "_generated" not in path.parts and (found := private_imports(path.read_text()))
    }
    assert offenders == {}


def test_the_check_sees_each_form_of_private_import():
    source = "from uvicorn.protocols.http.httptools_impl import _x\nfrom h2._state import s\nimport zttp._core\n"
    assert len(private_imports(source)) == 3
    assert private_imports("from __future__ import annotations\nfrom dms._generated import x\nimport numpy\n") == []
