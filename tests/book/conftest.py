import pytest


@pytest.fixture
def build(tmp_path, monkeypatch):
    """A fresh build folder (``SGDBOOK_BUILD``) for ledger, status and report files."""
    monkeypatch.setenv("SGDBOOK_BUILD", str(tmp_path))
    return tmp_path
