"""tests/unit/ mirrors rlm_mcp/: every package has a folder of unit tests, so a package's promises are tested
beside it and not only end to end (issue 27)."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parent
PACKAGE = UNIT.parents[1] / "rlm_mcp"


def test_every_package_has_a_folder_of_unit_tests() -> None:
    packages = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))
    assert len(packages) >= 15  # the packages are found at all
    missing = [name for name in packages if not any((UNIT / name).glob("test_*.py"))]
    assert missing == [], f"packages without unit tests in tests/unit/<package>/: {missing}"
