"""Shared test set-up: a non-interactive matplotlib backend, and no figure left open
after a test."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest


@pytest.fixture(autouse=True)
def close_figures():
    """Close every pyplot figure a test opened, so figures never pile up across
    tests."""
    yield
    plt.close("all")
