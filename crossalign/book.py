"""What the chapters use to put a run's numbers into their prose.

A chapter never types a number its code computes: a cell calls :func:`glue` and the
text says ``{glue:text}`name:.3f``` (MyST-NB's role), so re-executing the chapter
updates the sentence (DESIGN.md 4.6). :func:`glue` stores the value the way MyST-NB's
own ``myst_nb.glue(name, value, display=False)`` does (a display output that the book
hides and the role reads), without needing MyST-NB installed (Colab has the package,
not the book's tooling), and it stores plain Python numbers: MyST-NB reads the stored
text back with ``ast.literal_eval``, which fails on ``np.float64(0.82)`` or a tensor's
repr.

Values are rounded to ``digits`` decimals (4 by default) before they are stored, so the
saved notebooks compare equal under nbval on machines whose last float bits differ.
Durations go through :func:`glue_seconds`, which stores text such as ``'93 s'`` that
the nbval sanitizer masks, because a time differs on every run.
"""

from __future__ import annotations

import numbers
from typing import Any

GLUE_MIME_PREFIX = "application/papermill.record/"


def plain_value(value: Any, digits: int | None = 4) -> int | float | str:
    """``value`` as a Python int, float (rounded to ``digits`` decimals) or str.

    Accepts Python and NumPy numbers and one-element tensors; anything else is an
    error, because the prose can only show a number or a short text.
    """
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        raise TypeError("glue a number or a text, not a bool")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return round(number, digits) if digits is not None else number
    if isinstance(value, str):
        return value
    raise TypeError(f"glue a number or a text, not {type(value).__name__}")


def glue(name: str, value: Any, digits: int | None = 4) -> None:
    """Store ``value`` under ``name`` for the chapter's prose; nothing is shown on the
    page.

    It returns nothing on purpose: a cell that ends with a call returning a value
    shows that value as the cell's result, on the page, below the code."""
    from IPython.display import display

    stored = plain_value(value, digits)
    display(
        {GLUE_MIME_PREFIX + "text/plain": repr(stored)},
        raw=True,
        metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_MIME_PREFIX}},
    )


def glue_seconds(name: str, seconds: float) -> None:
    """Store a duration as text (``'93 s'``, ``'1.4 s'`` under 10 s) for
    ``{glue:text}`name```."""
    glue(name, f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s")
