"""Report classes over 150 lines and functions over 40 lines in airflow_secure_mail/ (issue 11's limits)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CLASS_LIMIT, FUNC_LIMIT = 150, 40


def oversized(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                limit = CLASS_LIMIT if isinstance(node, ast.ClassDef) else FUNC_LIMIT
                if length > limit:
                    out.append(f"{path}:{node.lineno} {node.name} {length} lines (limit {limit})")
    return out


if __name__ == "__main__":
    found = oversized(Path(sys.argv[1] if len(sys.argv) > 1 else "airflow_secure_mail"))
    print("\n".join(found) or "all units within limits")
    sys.exit(1 if found else 0)
