"""The architecture document stays true: every module of the package is in its module map."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.unit


def _module_map() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## Module map")
    return text[start : text.index("\n## ", start + 1)]


def test_every_module_is_in_the_module_map() -> None:
    rows = _module_map()
    # A row names a module by path, or a package (`osup_mp/cli/`) with its modules' file names.
    packages = {
        m.group(1): m.group(0) for m in re.finditer(r"^\| `(osup_mp/[\w/]+/)` \|.*$", rows, re.M)
    }
    missing = []
    for path in sorted((ROOT / "osup_mp").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if path.name in ("__init__.py", "__main__.py") or f"`{rel}`" in rows:
            continue
        package = next((p for p in packages if rel.startswith(p)), None)
        if package is None or f"`{rel[len(package) :]}`" not in packages[package]:
            missing.append(rel)
    assert not missing, f"modules missing from docs/architecture.md's module map: {missing}"


def test_the_module_map_names_no_module_that_is_gone() -> None:
    named = re.findall(r"`(osup_mp/[\w/]+\.py)`", _module_map())
    gone = [n for n in named if not (ROOT / n).exists()]
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_no_select_select() -> None:
    """``select.select`` fails once a descriptor number passes 1023: poll or epoll only."""
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for top in ("osup_mp", "tools", "tests")
        for path in sorted((ROOT / top).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "select.select(" in line and path.name != "test_architecture.py"
    ]
    assert not found, f"select.select in {found}"
