"""Every test under tests/golden/ is marked `golden` (run the originals' code beside ours)."""
import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if '/golden/' in str(item.fspath).replace('\\', '/'):
            item.add_marker(pytest.mark.golden)
