"""docs/bad-input.md names a test for every case: each one it names exists."""

import re

from .conftest import REPO


def test_every_test_the_bad_input_table_names_exists():
    text = (REPO / "docs" / "bad-input.md").read_text()
    named = re.findall(r"`(test_\w+\.py)(?:::(\w+))?", text)
    assert len(named) >= 40
    missing = []
    for file, name in named:
        path = REPO / "tests" / file
        if not path.is_file() or (name and f"def {name}(" not in path.read_text()):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/bad-input.md names tests that do not exist: {missing}"
