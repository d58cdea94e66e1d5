"""Every public name the package defines at module level is defined in one module only, so a name
says one thing wherever it is imported from (issue 13: format_report, read_json, IMAGE_SUFFIXES,
METHODS, METRICS, MODES were each defined twice)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import detect

PACKAGE = Path(detect.__file__).parent
# The protocol every command module implements (detect/commands/__init__.py) and the module logger.
SHARED_BY_DESIGN = {"add_arguments", "run", "log"}


def module_level_names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def test_public_names_are_defined_once():
    defined_in = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in module_level_names(ast.parse(path.read_text(encoding="utf-8"))):
            if not name.startswith("_") and name not in SHARED_BY_DESIGN:
                defined_in[name].append(str(path.relative_to(PACKAGE.parent)))
    twice = {name: paths for name, paths in defined_in.items() if len(paths) > 1}
    assert twice == {}
