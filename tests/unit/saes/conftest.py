"""Fixtures of the SAE tests: a node CA made with the real PKI."""

from __future__ import annotations

import pytest

from controllers import pki


@pytest.fixture(scope="session")
def node_ca() -> pki.Credentials:
    return pki.create_ca("test node CA")
