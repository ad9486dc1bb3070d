"""Numerical helpers shared by the tests: independent truth for gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch


def central_differences(
    f: Callable[[], torch.Tensor], x: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Numerical gradient of the scalar ``f()`` with respect to ``x``, one coordinate at
    a time.

    ``x`` is perturbed in place (through a detached view, so ``f`` sees the change) and
    restored; use float64 tensors so that ``eps = 1e-6`` gives about 1e-9 accuracy.
    """
    grad = torch.zeros_like(x)
    flat_x, flat_grad = x.detach().view(-1), grad.view(-1)
    with torch.no_grad():
        for k in range(flat_x.numel()):
            saved = flat_x[k].item()
            flat_x[k] = saved + eps
            up = f().item()
            flat_x[k] = saved - eps
            down = f().item()
            flat_x[k] = saved
            flat_grad[k] = (up - down) / (2 * eps)
    return grad
