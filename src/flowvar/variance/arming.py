"""Which passes the gradient-variance monitor's hooks record, judged from the step numbers it is called with.

A forward pass cannot say which step it belongs to: the monitor learns the number only when ``step()`` is called
after the backward pass. Recording costs time (and, for layers whose gradients the engine computes itself, the
per-sample work), so the hooks are armed ahead of the passes the monitor expects to log:

* fully for the next step number when that one is due;
* lightly (calls recorded, every gradient left to autograd: exact when measured, slower to measure) for the pass
  after a logged step — a next micro-batch may carry the same number — and for every pass while the numbers have
  not gone up one at a time: at the start, and for good once they restarted (per epoch) or jumped (``step()`` called
  on logged steps only, a call left out), since any number may come next;
* off otherwise. The hooks stay installed: an unlogged step still runs every hook's Python call, which returns
  at a flag check — a cost that grows with the number of hooked modules and weighs most on small models and batches
  (docs/gradient_variance.md, "Step numbers", has a measurement). Log less often, or close the monitor (removes the
  hooks) when no more logs are wanted.

A resumed run (a new monitor given an earlier one's :meth:`Arming.state_dict` after the checkpoint's step) arms its
first pass as the uninterrupted run would have (:meth:`Arming.resume`): layers whose gradients the engine computes
itself write them into ``.grad`` only on fully armed passes, so a first pass armed differently would change ``.grad``
by rounding and the resumed run would no longer end bit-identical.

The one pass that cannot be measured is a due step's that ran while the hooks were off: the first restart after
numbers that went up one at a time, or a due step right after a left-out call. The monitor skips its log with one
warning, and from then on arms every pass.
"""

from __future__ import annotations

from typing import Any

from flowvar.errors import ConfigError, check_positive_int

__all__ = ["Arming", "SkippedLogWarning"]


class SkippedLogWarning(UserWarning):
    """A step the monitor was due to log was not logged, and training goes on: a batch of one sample (no variance),
    or a pass that ran while the hooks were off (step numbers that restart or jump). Issued once per cause."""


class Arming:
    """The arming policy for logging every ``every`` steps (module docstring)."""

    def __init__(self, every: int) -> None:
        self.every = check_positive_int("every", every)
        self.last: int | None = None  # the number step() was last called with
        self.consecutive = False  # the numbers have been seen going up one at a time, and never otherwise
        self.jumped = False  # they restarted or jumped at least once

    def due(self, step: int) -> bool:
        """Whether ``step`` is a logged step."""
        return step % self.every == 0

    def track(self, step: int) -> None:
        """Note the number of a step() call: one after the last, or otherwise (a repeat says nothing: micro-batches
        numbered by their optimizer step)."""
        if self.last is not None and step != self.last:
            if step == self.last + 1:
                self.consecutive = not self.jumped
            else:
                self.irregular()
        self.last = step

    def irregular(self) -> None:
        """The numbers did not tell which pass was due (a restart, a jump, a pass run while the hooks were off):
        arm every pass from now on."""
        self.consecutive, self.jumped = False, True

    def missed(self, step: int) -> str:
        """Why the due ``step`` is not logged: its pass ran while the hooks were off. Arms every pass from now on."""
        self.irregular()
        return (f"step {step} is not logged: its forward/backward pass ran while the monitor's hooks were off. The "
                f"monitor arms them ahead of the steps it expects to log, and step() was last called with a number "
                f"after which {step} was not expected (step numbers that restart, e.g. per epoch, or jump, or a step() "
                f"call left out). From now on the hooks record every pass lightly, so later due steps are logged; "
                f"number the steps consecutively (a global step counter) to keep unlogged steps off that cost")

    def after(self, step: int, logged: bool) -> tuple[bool, bool]:
        """(armed, light) for the pass after step() of ``step`` (``logged``: ``step`` was due)."""
        upcoming = self.due(step + 1)
        return upcoming or logged or not self.consecutive, not upcoming

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to arm as the uninterrupted one: the last step number and how the numbers went."""
        return {"last": self.last, "consecutive": self.consecutive, "jumped": self.jumped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take an earlier :meth:`state_dict` (the ``every`` stays this one's)."""
        try:
            last, consecutive, jumped = state["last"], state["consecutive"], state["jumped"]
        except (KeyError, TypeError) as err:
            raise ConfigError(f"an arming state must be the dict Arming.state_dict() returns, with 'last', "
                              f"'consecutive' and 'jumped'; got {state!r}") from err
        self.last = None if last is None else int(last)
        self.consecutive, self.jumped = bool(consecutive), bool(jumped)

    def resume(self) -> tuple[bool, bool]:
        """(armed, light) for the first pass after :meth:`load_state_dict`: :meth:`after` of the last step (whose
        call was logged exactly when it was due), except that a pass the uninterrupted run would have left unarmed is
        armed lightly. Lightly armed and unarmed passes both leave every gradient to autograd, so ``.grad`` is the
        uninterrupted run's either way, and a resumed loop that numbers its first step otherwise than ``last + 1``
        (a checkpoint's step run again) still has that pass recorded. Before any step (``last`` None): fully armed,
        as a new monitor is."""
        if self.last is None:
            return True, False
        armed, light = self.after(self.last, self.due(self.last))
        return True, light or not armed
