"""The training engine: the one optimiser step every training loop of the package runs.

A loop hands :class:`Engine` its optimiser (and schedule) and, each step, a function
``loss_at(micro_step)`` that builds micro-batch ``micro_step`` and returns its loss
(optionally with a dict of extra scalars to record). The engine owns everything else:

1. forward under autocast (``precision``), the backward pass through the fp16 gradient
   scaler, divided by ``grad_accum`` and accumulated over ``grad_accum`` micro-batches
   (under DDP the gradient all-reduce runs on the last micro-batch only: ``no_sync``);
2. gradient clipping, the optimiser and scheduler steps;
3. bookkeeping without host syncs: losses and extras stay on the device, one value per
   step, and are read back in one transfer at log intervals (:meth:`Engine.flush`),
   where they are checked for NaN/inf and appended to :attr:`Engine.history`.

The models' checks of their inputs' values (:func:`crossalign.utils.values_hold`) are
skipped inside the step when the data is on an accelerator, for the same reason.

Why the read-back waits: ``loss.item()`` or ``if not torch.isfinite(loss)`` stalls the
CPU until the GPU has finished the step, so the next step cannot be queued while this
one runs. The price of waiting is that a NaN is reported at the next log interval rather
than the step it appears in (the message still names that step); loops that write
checkpoints flush first, so a checkpoint never holds weights a NaN reached.

``grad_accum`` micro-batches of ``B`` items give the same gradient as one batch of
``K * B`` items whenever the loss is a mean over independent items (a captioning or
classification loss): ``tests/test_engine.py`` checks it to 1e-6 in float64. A
contrastive loss is not such a mean: its negatives come from the micro-batch, so
accumulation gives a different (smaller-batch) objective, as it does in every
contrastive trainer that does not gather features across micro-batches.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from crossalign.train.precision import autocast, check_precision, grad_scaler
from crossalign.utils import training_step

LossOutput = torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""


def enable_tf32(enabled: bool = True) -> None:
    """Let fp32 matrix products and convolutions on CUDA use TF32 tensor cores.

    TF32 keeps fp32's range with a 10-bit mantissa inside the product (the sums stay
    fp32), which is what every large-scale trainer runs fp32 layers with; on an
    Ampere-or-newer GPU it is several times faster. It changes nothing on the CPU.
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


class Engine:
    """Runs optimiser steps of ``loss_at`` and keeps the history (module docstring).

    Args:
        optimizer: built by :func:`crossalign.train.optim.build_optimizer` (or any
            ``torch.optim`` optimiser).
        scheduler: a learning-rate schedule stepped once per optimiser step, or None.
        device: where the loss is computed (picks the autocast device type).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (fp16 adds a gradient scaler).
        grad_accum: micro-batches per optimiser step.
        clip_grad_norm: clip the norm of the gradients of ``clip_parameters`` (None or
            0: no clipping).
        clip_parameters: the parameters to clip (default: every parameter the optimiser
            updates); those that do not require a gradient are left out, so a stale
            gradient on a frozen part (left by an earlier loop) never counts.
        log_every: read the recorded values back every this many steps.
        ddp_model: the ``DistributedDataParallel`` wrapper, if any, so that gradient
            all-reduces wait for the last micro-batch (``no_sync``).
        reduce: averages a device tensor over ranks (DDP: the logged loss is the
            global batch's, not this rank's).
        hint: what the NaN error suggests; a callable is asked when the error is raised
            (so it can name the last good checkpoint).
        observe: returns device values to record after each optimiser step (e.g. the
            learned temperature); read back with the losses.
        record: turns a flushed ``{"step", "loss", "lr", **extras, **observed}`` into
            the loop's history entry (default: kept as it is).
        history: the list the records are appended to (a resumed run's history).
        tf32: on CUDA, switch TF32 matrix products on or off (:func:`enable_tf32`;
            torch's switch is process-wide); None leaves it as it is.
        desc, total_steps, start_step, progress: the progress bar.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        grad_accum: int = 1,
        clip_grad_norm: float | None = None,
        clip_parameters: Iterable[nn.Parameter] | None = None,
        log_every: int = 25,
        ddp_model: nn.Module | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        hint: str | Callable[[], str] = "lower the learning rate",
        observe: Callable[[], dict[str, torch.Tensor]] | None = None,
        record: Callable[[dict[str, float]], dict[str, float]] | None = None,
        history: list[dict[str, float]] | None = None,
        tf32: bool | None = True,
        desc: str = "train",
        total_steps: int | None = None,
        start_step: int = 0,
        progress: bool = False,
    ):
        if isinstance(grad_accum, bool) or not isinstance(grad_accum, int):
            raise ValueError(f"grad_accum must be an integer >= 1, got {grad_accum!r}")
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.device = torch.device(device)
        check_precision(precision, self.device)
        if tf32 is not None and self.device.type == "cuda":
            enable_tf32(tf32)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.precision, self.grad_accum = precision, grad_accum
        self.clip_grad_norm = clip_grad_norm
        if clip_parameters is None:
            clip_parameters = [
                p for group in optimizer.param_groups for p in group["params"]
            ]
        self.clip_parameters = [p for p in clip_parameters if p.requires_grad]
        self.log_every, self.ddp_model, self.reduce = log_every, ddp_model, reduce
        self.hint, self.desc = hint, desc
        self.observe, self.record = observe, record
        self.scaler = grad_scaler(precision, self.device)
        self.step_count = start_step
        self.history: list[dict[str, float]] = [] if history is None else history
        self._pending: list[tuple[int, float, list[torch.Tensor], dict]] = []
        self._bar = tqdm(
            total=total_steps, initial=start_step, desc=desc, disable=not progress
        )

    def step(self, loss_at: Callable[[int], LossOutput]) -> None:
        """One optimiser step over micro-batches ``step * grad_accum ..`` of
        ``loss_at``."""
        first = self.step_count * self.grad_accum
        losses: list[torch.Tensor] = []
        extras: dict[str, torch.Tensor] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for k in range(self.grad_accum):
            last = k == self.grad_accum - 1
            sync = (
                contextlib.nullcontext()
                if last or self.ddp_model is None
                else self.ddp_model.no_sync()  # type: ignore[operator]
            )
            with sync, training_step():
                with autocast(self.precision, self.device):
                    out = loss_at(first + k)
                loss, extra = out if isinstance(out, tuple) else (out, {})
                scaled = loss / self.grad_accum if self.grad_accum > 1 else loss
                self.scaler.scale(scaled).backward()
            losses.append(loss.detach())
            extras = {name: value.detach() for name, value in extra.items()}
        if self.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.clip_parameters, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = float(self.optimizer.param_groups[0]["lr"])
        if self.scheduler is not None:
            lr = float(self.scheduler.get_last_lr()[0])
            self.scheduler.step()
        if self.observe is not None:
            extras.update(
                {name: value.detach().clone() for name, value in self.observe().items()}
            )
        self.step_count += 1
        self._pending.append((self.step_count, lr, losses, extras))
        self._bar.update(1)
        if self.step_count % self.log_every == 0:
            self.flush()

    def run(
        self,
        loss_at: Callable[[int], LossOutput],
        steps: int,
        after_step: Callable[[int], None] | None = None,
    ) -> list[dict[str, float]]:
        """Step until ``steps`` optimiser steps are done (calling ``after_step(step)``
        after each), flush, close the bar; return the history."""
        while self.step_count < steps:
            self.step(loss_at)
            if after_step is not None:
                after_step(self.step_count)
        self.close()
        return self.history

    def flush(self) -> None:
        """Read the pending records back in one transfer, check them, extend the
        history.

        Raises :class:`NonFiniteLossError` naming the first step whose loss (averaged
        over ranks under DDP, so that every rank stops) was NaN/inf.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = [v for _, _, losses, _ in pending for v in losses]
        values += [v for _, _, _, extras in pending for v in extras.values()]
        host = torch.stack([v.double().reshape(()) for v in values]).tolist()
        split = len(pending) * self.grad_accum
        micro, rest = host[:split], iter(host[split:])
        step_losses = []
        for i in range(len(pending)):
            running = 0.0  # summed as floats, in order: the loss of the whole step
            for value in micro[i * self.grad_accum : (i + 1) * self.grad_accum]:
                running += value / self.grad_accum
            step_losses.append(running)
        if self.reduce is not None:
            reduced = self.reduce(torch.tensor(step_losses, device=self.device))
            step_losses = reduced.tolist()
        for (step, _, _, _), value in zip(pending, step_losses):
            if not math.isfinite(value):
                hint = self.hint() if callable(self.hint) else self.hint
                raise NonFiniteLossError(
                    f"{self.desc}: the loss became {value} at step {step}; training "
                    f"stopped ({hint})"
                )
        for (step, lr, _, extras), loss in zip(pending, step_losses):
            entry = {"step": step, "loss": loss, "lr": lr}
            entry.update({name: next(rest) for name in extras})
            self.history.append(entry if self.record is None else self.record(entry))
        self._bar.set_postfix(loss=f"{step_losses[-1]:.3f}")

    def close(self) -> None:
        """Flush what is pending and close the progress bar."""
        self.flush()
        self._bar.close()

    @property
    def losses(self) -> list[float]:
        """The loss of every flushed step (of loops whose records keep ``"loss"``)."""
        return [entry["loss"] for entry in self.history if "loss" in entry]
