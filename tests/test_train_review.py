"""flowvar.train, review sampR 1 and 4: an unusable checkpoint_dir is refused before step 1, and an interrupt
(SIGINT, or SIGTERM under sigterm_as_interrupt) keeps the step it arrived in — its checkpoint is written at the end
of that step, then the KeyboardInterrupt goes on — so a resume is bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import flowvar
import flowvar.train as train_mod
from flowvar.errors import WriteError
from flowvar.interpolants import Interpolant, PathSample
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.runner import sigterm_as_interrupt
from flowvar.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train
from test_train import DropoutField, coupling, resume_config  # its dropout field: the global RNG a resume carries

SRC = Path(flowvar.__file__).resolve().parents[1]  # the subprocesses import the flowvar these tests import


def model(seed: int = 0) -> DropoutField:
    torch.manual_seed(seed)
    return DropoutField()


def config(steps: int = 20) -> TrainConfig:
    return resume_config(steps)


class Steps:
    """Records the steps its on_step saw."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_step(self, step: int, model: nn.Module, path: PathSample, loss_value: float) -> None:
        self.seen.append(step)


class Signal:
    """Sends ``signum`` to this process ``times`` times during step ``at`` (a Ctrl-C or a `kill` mid-step)."""

    def __init__(self, at: int, signum: int = signal.SIGINT, times: int = 1) -> None:
        self.at, self.signum, self.times = at, signum, times

    def on_step(self, step: int, model: nn.Module, path: PathSample, loss_value: float) -> None:
        if step == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.fixture(autouse=True)
def python_sigint_handler() -> Any:
    """Each test starts with Python's own Ctrl-C handler, as a process started from a terminal has: a pytest-xdist
    worker (`make test`, CI) runs with SIGINT ignored, which the trainer rightly leaves alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def same_run(a: tuple[nn.Module, Any], b: tuple[nn.Module, Any]) -> bool:
    (ma, ra), (mb, rb) = a, b
    return (ra.losses == rb.losses and all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(),
                                                                             mb.state_dict().values(), strict=True))
            and all(torch.equal(ra.ema_state[k], rb.ema_state[k]) for k in ra.ema_state))


# ------------------------------------------------------------------------------------------ sampR 1: the folder probe


@pytest.mark.parametrize("where", ["afile/sub", "afile"])
def test_a_checkpoint_dir_that_is_or_lies_under_a_file_is_refused_before_step_1(tmp_path: Path, where: str) -> None:
    """It used to be found at the first checkpoint write: after every step with the default checkpoint_every=0,
    losing the run's TrainResult (EMA weights, losses); "afile" itself said only "File exists"."""
    (tmp_path / "afile").write_text("x")
    seen = Steps()
    with pytest.raises(WriteError, match=rf"^cannot write checkpoints to checkpoint_dir='.*{where}': .*afile is a "
                                         rf"file; nothing was trained; point checkpoint_dir at a folder this process "
                                         rf"can create and write") as caught:
        train(MLPField(2, 8, 1), CFMLoss(), coupling(), TrainConfig(steps=200, batch_size=8),
              checkpoint_dir=tmp_path / where, callbacks=[seen])
    assert seen.seen == [] and "\n" not in str(caught.value)
    assert caught.value.path == tmp_path / where
    assert (tmp_path / "afile").read_text() == "x"


def test_a_folder_that_cannot_be_written_is_refused_before_step_1(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe writes a file, as a checkpoint will (os.access says yes to root on a read-only mount's folder)."""
    def refused(**kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(train_mod.tempfile, "mkstemp", refused)
    seen = Steps()
    with pytest.raises(WriteError, match=r"checkpoint_dir='.*ck': .*ck cannot be created or written \(Permission "
                                         r"denied\); nothing was trained"):
        train(MLPField(2, 8, 1), CFMLoss(), coupling(), TrainConfig(steps=5, batch_size=8), tmp_path / "ck",
              callbacks=[seen])
    assert seen.seen == []


def test_the_probe_creates_the_folder_and_leaves_only_the_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    train(MLPField(2, 8, 1), CFMLoss(), coupling(), TrainConfig(steps=3, batch_size=8), folder)
    assert sorted(os.listdir(folder)) == [CHECKPOINT_NAME]


def test_a_finished_run_in_a_folder_that_cannot_be_written_is_still_returned(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Returning a finished run writes nothing, so the probe (which would refuse the folder) is not made."""
    train(MLPField(2, 8, 1), CFMLoss(), coupling(), TrainConfig(steps=3, batch_size=8), tmp_path)
    monkeypatch.setattr(train_mod.tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(PermissionError(13, "no")))
    with pytest.warns(train_mod.ResumeWarning):
        again = train(MLPField(2, 8, 1), CFMLoss(), coupling(), TrainConfig(steps=3, batch_size=8), tmp_path)
    assert again.resumed_from == 3


# ---------------------------------------------------------------------------------------- sampR 4: interrupts keep work


def test_sigint_mid_step_checkpoints_that_step_and_the_resume_is_bit_identical(tmp_path: Path) -> None:
    """Used to keep only the checkpoint of step 10 (checkpoint_every=5): steps 11-13 were lost."""
    uninterrupted = model()
    reference = uninterrupted, train(uninterrupted, CFMLoss(Interpolant(0.05)), coupling(), config())
    handler = signal.getsignal(signal.SIGINT)
    seen = Steps()
    with pytest.raises(KeyboardInterrupt) as caught:
        train(model(), CFMLoss(Interpolant(0.05)), coupling(), config(), tmp_path, callbacks=[Signal(13), seen])
    assert seen.seen[-1] == 13  # the step finished: the interrupt waited for its end
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 13
    assert any("interrupted during step 13 of 20" in n and "holds step 13" in n for n in caught.value.__notes__)
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    resumed = model(seed=99)
    with pytest.warns(train_mod.ResumeWarning, match="up to step 13"):
        result = train(resumed, CFMLoss(Interpolant(0.05)), coupling(), config(), tmp_path)
    assert result.resumed_from == 13 and same_run((resumed, result), reference)


def test_sigterm_under_sigterm_as_interrupt_is_deferred_the_same_way(tmp_path: Path) -> None:
    """The CLI runs every command under sigterm_as_interrupt: `kill`, `timeout` and CI cancellation keep the step."""
    reference = model()
    ref_result = train(reference, CFMLoss(), coupling(), config(12))
    with sigterm_as_interrupt():
        term = signal.getsignal(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            train(model(), CFMLoss(), coupling(), config(12), tmp_path, callbacks=[Signal(7, signal.SIGTERM)])
        assert signal.getsignal(signal.SIGTERM) is term
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 7
    resumed = model(seed=5)
    with pytest.warns(train_mod.ResumeWarning, match="up to step 7"):
        result = train(resumed, CFMLoss(), coupling(), config(12), tmp_path)
    assert same_run((resumed, result), (reference, ref_result))


def test_a_second_interrupt_acts_at_once(tmp_path: Path) -> None:
    """A step that hangs can still be stopped: the second Ctrl-C raises where it lands (that step is lost)."""
    seen = Steps()
    with pytest.raises(KeyboardInterrupt):
        train(model(), CFMLoss(), coupling(), config(), tmp_path, callbacks=[Signal(13, times=2), seen])
    assert seen.seen[-1] == 12 and load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 10


def test_without_a_checkpoint_dir_or_with_an_ignored_signal_nothing_changes(tmp_path: Path) -> None:
    """No checkpoint to keep: the interrupt acts at once. An ignored SIGINT (the runner's pool workers) stays
    ignored, and the default SIGTERM (which kills them) is not replaced: the workers end as promptly as before."""
    seen = Steps()
    with pytest.raises(KeyboardInterrupt):
        train(model(), CFMLoss(), coupling(), config(), callbacks=[Signal(3), seen])
    assert seen.seen == [1, 2]  # raised inside step 3's first callback
    # a runner pool worker's signals, set here: an earlier test of this xdist worker may have left a Python SIGTERM
    # handler (the premise that failed once in CI)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        installed: list[Any] = []

        class Look:
            def on_step(self, step: int, model: nn.Module, path: PathSample, loss_value: float) -> None:
                installed.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))

        result = train(model(), CFMLoss(), coupling(), config(6), tmp_path, callbacks=[Signal(3), Look()])
        assert result.steps_done == 6
        assert installed[0] == (signal.SIG_IGN, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


WORKER = textwrap.dedent("""
    import signal, sys, time, torch
    # Python's Ctrl-C handler, as from a terminal: started by a pytest-xdist worker, SIGINT arrives ignored (inherited)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from torch import nn
    from flowvar.couplings import IndependentCoupling
    from flowvar.distributions import StandardNormal
    from flowvar.gaussian import GaussianProblem
    from flowvar.interpolants import Interpolant
    from flowvar.loss import CFMLoss
    from flowvar.train import TrainConfig, train

    torch.set_num_threads(1)

    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Dropout(0.2), nn.Linear(32, 2))

        def forward(self, x, t):
            return self.net(torch.cat([x, t[:, None]], 1))

    class Slow:
        def on_step(self, step, model, path, loss_value):
            print("step", step, flush=True)
            time.sleep(float(sys.argv[3]))

    def run(folder, slow):
        torch.manual_seed(0)
        m = Field()
        config = TrainConfig(steps=60, batch_size=32, lr=2e-3, seed=3, grad_clip=1.0, warmup_steps=4, ema_decay=0.9)
        data = IndependentCoupling(StandardNormal(2), GaussianProblem.isotropic(2, 3.0))
        r = train(m, CFMLoss(Interpolant(0.05)), data, config, folder, callbacks=[Slow()] if slow else [])
        return {"model": m.state_dict(), "ema": r.ema_state, "losses": r.losses, "resumed": r.resumed_from}

    if sys.argv[1] == "interrupted":
        run(sys.argv[2], slow=True)
    else:  # the resume of that folder and an uninterrupted run, in one process with the same threads
        torch.save({"resumed": run(sys.argv[2], slow=False), "reference": run(None, slow=False)}, sys.argv[4])
""")


def test_a_real_sigint_to_a_training_process_keeps_its_step_and_resumes_bit_identical(tmp_path: Path) -> None:
    """An asynchronous Ctrl-C to a process training with the default checkpoint_every=0: it used to lose the whole
    run. Now the step it lands in finishes, its checkpoint is written, and the process ends by the interrupt."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    folder = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, str(script), "interrupted", str(folder), "0.05"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "step 5" or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    lines += [ln.strip() for ln in out.splitlines()]
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
    last = max(int(ln.split()[1]) for ln in lines if ln.startswith("step "))
    saved = load_checkpoint(folder / CHECKPOINT_NAME)["step"]
    assert 5 <= saved == last < 60  # the step the interrupt landed in, finished and kept
    assert f"holds step {saved}: the same call resumes from it" in err
    results = tmp_path / "results.pt"
    subprocess.run([sys.executable, str(script), "resume", str(folder), "0", str(results)], check=True, env=env,
                   capture_output=True, timeout=300)
    both = torch.load(results, weights_only=True)
    resumed, reference = both["resumed"], both["reference"]
    assert resumed["resumed"] == saved and reference["resumed"] is None
    assert resumed["losses"] == reference["losses"] and len(reference["losses"]) == 60
    assert all(torch.equal(resumed["model"][k], v) for k, v in reference["model"].items())
    assert all(torch.equal(resumed["ema"][k], v) for k, v in reference["ema"].items())
