"""An interrupted experiment resumes: its finished trainings are loaded, the one it was in continues from its last
checkpoint, and the result equals an uninterrupted run's (CPU: bit-identical trainings)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import flowvar.experiments.table1 as table1
import flowvar.train as train_module
from flowvar.cache import Cache, cache_key, run_cached
from flowvar.experiments.base import CHECKPOINTS_PER_TRAINING, RunContext, build_config, get_experiment, run_experiment
from flowvar.train import train_mlp_field

# a full-mode Table 1 small enough for a unit test: 2 seeds × 2 σ = 4 trainings of 40 steps (checkpoint every 4)
TINY = {"dims": "[2]", "n_seeds": "2", "n_train": "8", "n_eval": "40", "width": "16", "depth": "2", "steps": "40",
        "batch_size": "8"}


def _context(tmp_path: Path, *, quick: bool, work: bool) -> RunContext:
    return RunContext(name="x", out_dir=tmp_path, quick=quick, seed=0, work_dir=tmp_path / "work" if work else None)


def test_checkpoint_dir_names_one_training_and_is_none_without_a_work_dir(tmp_path: Path) -> None:
    assert _context(tmp_path, quick=False, work=False).checkpoint_dir("sigma=0.0") is None
    ctx = _context(tmp_path, quick=False, work=True)
    assert ctx.checkpoint_dir("d=3", "seed=1", "sigma=0.05") == tmp_path / "work" / "d=3" / "seed=1" / "sigma=0.05"
    for bad in [(), ("",), ("..",), ("a/b",)]:
        with pytest.raises(ValueError, match="checkpoint_dir parts"):
            ctx.checkpoint_dir(*bad)


def test_checkpoint_cadence_is_ten_per_full_training_and_only_the_last_in_quick_mode(tmp_path: Path) -> None:
    assert CHECKPOINTS_PER_TRAINING == 10
    assert _context(tmp_path, quick=False, work=True).checkpoint_every(50_000) == 5_000
    assert _context(tmp_path, quick=False, work=True).checkpoint_every(7) == 1
    assert _context(tmp_path, quick=True, work=True).checkpoint_every(50_000) == 0


class _InterruptError(Exception):
    """Stands for the SIGTERM / Ctrl-C that stops a long run (raised from inside a training)."""


def _instrumented(monkeypatch: pytest.MonkeyPatch, *, stop_in_call: int | None, stop_at_step: int = 0,
                  module: Any = table1, function: str = "train_mlp_field") -> list[int]:
    """Wrap an experiment module's training call (``function``: ``train_mlp_field`` or ``train_cfm``, as the module
    imported it): count the optimizer steps each call really runs, and raise _InterruptError at ``stop_at_step`` of
    call number ``stop_in_call`` (1-based). The counting callback is stateless, so the experiment's own callbacks (a
    monitor) keep their place in its checkpoints. Patching again wraps the original, not the previous wrapper."""
    executed: list[int] = []
    original = getattr(train_module, function)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        executed.append(0)
        call = len(executed)

        class Count:
            def on_step(self, step: int, model: Any, path: Any, loss: float) -> None:
                executed[-1] += 1
                if call == stop_in_call and step == stop_at_step:
                    raise _InterruptError

        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), Count()]
        return original(*args, **kwargs)

    monkeypatch.setattr(module, function, wrapped)
    return executed


def _untimed(x: Any) -> Any:
    """``x`` without wall-clock entries (keys with "runtime", ending in "_s", or "compute"): what a resumed run must
    reproduce exactly."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items()
                if not (isinstance(k, str) and ("runtime" in k or k.endswith("_s") or k == "compute"))}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def _runs(metrics: dict[str, Any]) -> dict[str, Any]:
    """Table 1's per-run metrics without the wall-clock times."""
    return _untimed(metrics["runs"])


def test_an_interrupted_experiment_keeps_its_finished_trainings_and_resumes_the_current_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    reference = run_experiment("table1", tmp_path / "plain", overrides=TINY)  # uninterrupted, no checkpoints

    cache = Cache(tmp_path / "cache")
    key = cache_key("table1", build_config(get_experiment("table1"), overrides=TINY), False)
    first = _instrumented(monkeypatch, stop_in_call=3, stop_at_step=22)
    with pytest.raises(_InterruptError):
        run_cached("table1", tmp_path / "out", cache, overrides=TINY)
    assert first == [40, 40, 22]
    work = cache.work_dir(key)
    assert sorted(p.name for p in work.rglob("checkpoint.pt")) == ["checkpoint.pt"] * 3
    assert not (tmp_path / "out" / "table1").exists()  # no half-written result

    again = _instrumented(monkeypatch, stop_in_call=None)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="flowvar.cache"):
        warnings.simplefilter("always")
        run = run_cached("table1", tmp_path / "out", cache, overrides=TINY)
    # the resume is said once for the run, not once per resumed training (train's ResumeWarning is for notebooks)
    assert not [w for w in caught if issubclass(w.category, train_module.ResumeWarning)]
    assert [r.getMessage() for r in caplog.records] == [
        f"resuming the interrupted run {key} from its checkpoints in {work}"]
    # trainings 1–2 are loaded (0 steps), training 3 continues from its step-20 checkpoint, training 4 runs whole
    assert again == [0, 0, 20, 40]
    assert not run.hit and not work.exists()  # the work folder goes once the result is stored
    assert _runs(run.result.metrics) == _runs(reference.metrics)
    assert [(c.id, c.verdict) for c in run.result.claims] == [(c.id, c.verdict) for c in reference.claims]


def test_force_recomputes_from_scratch_and_an_uncached_run_writes_no_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(tmp_path / "cache")
    first = _instrumented(monkeypatch, stop_in_call=2, stop_at_step=30)
    with pytest.raises(_InterruptError):
        run_cached("table1", tmp_path / "out", cache, overrides=TINY)
    assert first == [40, 30]
    again = _instrumented(monkeypatch, stop_in_call=None)
    run_cached("table1", tmp_path / "out", cache, overrides=TINY, force=True)
    assert again == [40, 40, 40, 40]  # --force: the checkpoints of the interrupted run are not reused

    plain = _instrumented(monkeypatch, stop_in_call=None)
    run_experiment("table1", tmp_path / "plain", overrides=TINY)
    assert plain == [40, 40, 40, 40]
    assert not list((tmp_path / "plain").rglob("checkpoint.pt"))


def test_a_corrupt_work_checkpoint_names_the_fix_a_command_line_user_can_apply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train's remedy, "point checkpoint_dir at another folder", is no option of `flowvar run --cache`: a damaged
    checkpoint of a cache work folder names the file, the training's folder, the run's work folder and the prune
    command instead."""
    from flowvar.errors import DataError

    cache = Cache(tmp_path / "cache")
    key = cache_key("table1", build_config(get_experiment("table1"), overrides=TINY), False)
    _instrumented(monkeypatch, stop_in_call=2, stop_at_step=30)
    with pytest.raises(_InterruptError):
        run_cached("table1", tmp_path / "out", cache, overrides=TINY)
    work = cache.work_dir(key)
    damaged = sorted(work.rglob("checkpoint.pt"))[0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x10
    damaged.write_bytes(bytes(data))
    _instrumented(monkeypatch, stop_in_call=None)
    with pytest.raises(DataError) as caught:
        run_cached("table1", tmp_path / "out", cache, overrides=TINY)
    message = str(caught.value)
    assert message.startswith(f"the checkpoint {damaged} is corrupt: its SHA-256 checksum does not match")
    assert f"delete {damaged.parent} to retrain that training only, or the run's work folder {work}" in message
    assert f"`flowvar cache prune --all-work --cache {cache.root}`" in message
    assert "checkpoint_dir" not in message
    assert work.is_dir()  # the other checkpoints are kept for the rerun


def test_a_file_in_place_of_the_work_folder_is_removed_not_trained_into(tmp_path: Path) -> None:
    """Garbage where a key's work folder goes held up every rerun: the first checkpoint write failed ("Not a
    directory") after a whole training. It holds nothing to resume, so it is removed and the run goes on."""
    cache = Cache(tmp_path / "cache")
    key = cache_key("table1", build_config(get_experiment("table1"), overrides=TINY), False)
    cache.work_dir(key).parent.mkdir(parents=True)
    cache.work_dir(key).write_text("garbage")
    run = run_cached("table1", tmp_path / "out", cache, overrides=TINY)
    assert not run.hit and run.key == key and not cache.work_dir(key).exists()


def test_clean_stale_removes_the_work_folders_of_finished_keys_only(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    finished, unfinished = "table1-0000000000000001", "table1-0000000000000002"
    for key in (finished, unfinished):
        (cache.work_dir(key) / "d=2").mkdir(parents=True)
    (cache.path(finished)).mkdir()
    (cache.path(finished) / "cache.json").write_text("{}")
    assert cache.clean_stale() == 1
    assert not cache.work_dir(finished).exists() and cache.work_dir(unfinished).is_dir()


PROP2_TINY = {"dims": "[2]", "n_seeds": "1", "n_pairs": "8", "width": "16", "depth": "2", "steps": "40",
              "batch_size": "8", "log_every": "10", "variance_samples": "16", "cf_pairs": "16",
              "cf_loss_samples": "200", "cf_variance_samples": "16", "floor_samples": "200", "euler_steps": "11"}


def test_prop2_resumes_its_monitored_trainings_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prop2's trainings carry a monitor with its own generator: its state is saved with each checkpoint
    (state_dict/load_state_dict), so an interrupted prop2 resumes to the uninterrupted run's histories."""
    import flowvar.experiments.prop2 as prop2

    reference = run_experiment("prop2", tmp_path / "plain", overrides=PROP2_TINY)
    cache = Cache(tmp_path / "cache")
    first = _instrumented(monkeypatch, stop_in_call=2, stop_at_step=27, module=prop2)
    with pytest.raises(_InterruptError):
        run_cached("prop2", tmp_path / "out", cache, overrides=PROP2_TINY)
    assert first == [40, 27]
    executed = _instrumented(monkeypatch, stop_in_call=None, module=prop2)
    run = run_cached("prop2", tmp_path / "out", cache, overrides=PROP2_TINY)
    assert executed == [0, 16]  # the σ = 0 training is loaded, the σ > 0 one continues from its step-24 checkpoint
    assert run.result.metrics["neural_histories"] == reference.metrics["neural_histories"]
    assert [(c.id, c.verdict) for c in run.result.claims] == [(c.id, c.verdict) for c in reference.claims]


class _Stateless:
    def on_step(self, step: int, model: Any, path: Any, loss: float) -> None:
        return None


def test_a_checkpoint_saved_with_other_callbacks_is_refused(tmp_path: Path) -> None:
    from flowvar.couplings import FixedPairs
    from flowvar.errors import ConfigError

    class Stateful:
        def __init__(self) -> None:
            self.generator = torch.Generator().manual_seed(1)

        def on_step(self, step: int, model: Any, path: Any, loss: float) -> None:
            torch.rand(1, generator=self.generator)

        def state_dict(self) -> dict[str, Any]:
            return {"generator": self.generator.get_state()}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.generator.set_state(state["generator"])

    pairs = FixedPairs(torch.randn(8, 2), torch.randn(8, 2))
    kw = {"width": 8, "depth": 1, "activation": "silu", "init_seed": 1, "batch_size": 4, "lr": 1e-3, "seed": 2,
          "checkpoint_dir": tmp_path}
    first = Stateful()
    train_mlp_field(pairs, 0.0, 2, steps=5, callbacks=[first], **kw)
    resumed = Stateful()
    train_mlp_field(pairs, 0.0, 2, steps=9, callbacks=[resumed], **kw)  # the generator continues where it stopped
    again = Stateful()
    for _ in range(9):
        torch.rand(1, generator=again.generator)
    assert torch.equal(resumed.generator.get_state(), again.generator.get_state())
    with pytest.raises(ConfigError, match="saved with the stateful callbacks"):
        train_mlp_field(pairs, 0.0, 2, steps=12, callbacks=[Stateful(), Stateful()], **kw)
    train_mlp_field(pairs, 0.0, 2, steps=12, callbacks=[Stateful(), _Stateless()], **kw)  # stateless ones may change


SOLVER_TINY = {"sigmas": "[0.0, 0.05]", "train_steps": "[20, 40]", "width": "16", "depth": "2", "batch_size": "16",
               "n_eval": "32", "euler_steps": "[11, 10]", "rk_steps": "[11]", "window_sources": "16",
               "window_points": "20", "max_dopri_steps": "2000"}


def test_solver_resolution_resumes_its_training_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """solver_resolution trains one network per σ and seed in segments (20, then 40 steps): each length keeps its own
    checkpoint in the work folder, so a rerun after an interruption in σ = 0.05's second segment loads the three
    finished lengths and continues the fourth from its last checkpoint (step 36), ending at the uninterrupted result."""
    import flowvar.experiments.solver_resolution as solver

    reference = run_experiment("solver_resolution", tmp_path / "plain", overrides=SOLVER_TINY)
    cache = Cache(tmp_path / "cache")
    first = _instrumented(monkeypatch, stop_in_call=4, stop_at_step=38, module=solver, function="train_cfm")
    with pytest.raises(_InterruptError):
        run_cached("solver_resolution", tmp_path / "out", cache, overrides=SOLVER_TINY)
    assert first == [20, 20, 20, 18]  # σ = 0: 20 + 20 steps; σ = 0.05: 20, then killed at step 38
    again = _instrumented(monkeypatch, stop_in_call=None, module=solver, function="train_cfm")
    run = run_cached("solver_resolution", tmp_path / "out", cache, overrides=SOLVER_TINY)
    # the step-36 checkpoint of seed 0's 40-step segment (ten per full-scale training), then seeds 1 and 2 (the full
    # config trains 3 seeds per σ) from scratch: 2 σ × 2 segments of 20 steps each
    assert again == [0, 0, 0, 4] + [20] * 8
    assert _untimed(run.result.metrics) == _untimed(reference.metrics)
    assert [(c.id, c.verdict) for c in run.result.claims] == [(c.id, c.verdict) for c in reference.claims]


LEMMA1_MLP_TINY = {"n_seeds": "2", "widths": "[8]", "depth": "2", "stages": "2", "first_stage_steps": "20",
                   "batch_size": "16", "eval_samples": "200"}


def test_lemma1_mlp_resumes_its_staged_trainings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lemma1_mlp trains each model through stages (fresh Adam, own learning rate): every stage has its checkpoint,
    so a rerun loads the finished stages (restoring the weights the next one starts from) and resumes the current."""
    import flowvar.experiments.lemma1_mlp as lemma1_mlp

    reference = run_experiment("lemma1_mlp", tmp_path / "plain", overrides=LEMMA1_MLP_TINY)
    cache = Cache(tmp_path / "cache")
    # call 7: the second seed's MLP, its first stage (20 steps)
    done = _instrumented(monkeypatch, stop_in_call=7, stop_at_step=15, module=lemma1_mlp, function="train_cfm")
    with pytest.raises(_InterruptError):
        run_cached("lemma1_mlp", tmp_path / "out", cache, overrides=LEMMA1_MLP_TINY)
    assert done[-1] == 15 and all(n > 0 for n in done)
    executed = _instrumented(monkeypatch, stop_in_call=None, module=lemma1_mlp, function="train_cfm")
    run = run_cached("lemma1_mlp", tmp_path / "out", cache, overrides=LEMMA1_MLP_TINY)
    assert executed[:len(done) - 1] == [0] * (len(done) - 1)  # every finished stage is loaded
    assert executed[len(done) - 1] == 20 - 14  # the interrupted stage goes on from its step-14 checkpoint
    assert _untimed(run.result.metrics) == _untimed(reference.metrics)
    assert [(c.id, c.verdict) for c in run.result.claims] == [(c.id, c.verdict) for c in reference.claims]


def test_reproduce_resumes_an_interrupted_experiment_and_force_starts_afresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`flowvar reproduce` (runner.compute, the step sweep shares) resumes from the work folder an interrupted run
    left in its cache, like run_cached does; only --force starts the trainings from scratch. (compute used to run
    every miss with force=True, which deleted the work folder first: a rerun retrained everything.)"""
    from flowvar.reproduce import Options, reproduce

    def options(force: bool = False) -> Options:
        return Options(out=tmp_path / "out", only=["table1"], overrides={"table1": TINY}, quiet=True, force=force)

    first = _instrumented(monkeypatch, stop_in_call=3, stop_at_step=22)
    summary = reproduce(options())
    assert [o.status for o in summary.outcomes] == ["failed"] and first == [40, 40, 22]
    again = _instrumented(monkeypatch, stop_in_call=None)
    summary = reproduce(options())
    assert [o.status for o in summary.outcomes] == ["computed"]
    assert again == [0, 0, 20, 40]  # finished trainings loaded, the third continues from its step-20 checkpoint
    assert not any((tmp_path / "out" / ".cache" / ".work").iterdir())

    first = _instrumented(monkeypatch, stop_in_call=2, stop_at_step=30)
    assert [o.status for o in reproduce(options(force=True)).outcomes] == ["failed"]
    forced = _instrumented(monkeypatch, stop_in_call=None)
    assert [o.status for o in reproduce(options(force=True)).outcomes] == ["computed"]
    assert forced == [40, 40, 40, 40]  # --force: the interrupted run's checkpoints are not reused


# advise-sigma at full settings made tiny: 3 seeds × 2 σ = 6 trainings of 10 steps (a checkpoint every step)
ADVISE_TINY = {"n_train": 12, "n_eval": 32, "min_heldout": 8, "steps": 10, "batch_size": 16, "width": 16, "depth": 2,
               "euler_steps": 4, "null_repeats": 2}


def test_advise_sigma_with_a_cache_resumes_an_interrupted_run_and_reuses_a_finished_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`flowvar advise-sigma --cache DIR`: an interrupted run keeps its finished trainings and continues the current
    one from its checkpoint when called again, giving the uninterrupted run's advice; a third call trains nothing."""
    import flowvar.experiments._imaging as imaging
    from flowvar.advise import advise_sigma

    reference = advise_sigma("gmm", sigmas=[0.0, 0.2], **ADVISE_TINY)  # no cache: nothing kept
    first = _instrumented(monkeypatch, stop_in_call=2, stop_at_step=6, module=imaging, function="train_cfm")
    with pytest.raises(_InterruptError):
        advise_sigma("gmm", sigmas=[0.0, 0.2], cache=tmp_path / "cache", **ADVISE_TINY)
    assert first == [10, 6]
    again = _instrumented(monkeypatch, stop_in_call=None, module=imaging, function="train_cfm")
    advice = advise_sigma("gmm", sigmas=[0.0, 0.2], cache=tmp_path / "cache", out=tmp_path / "out", **ADVISE_TINY)
    assert again[0] == 0 and 0 < again[1] < 10 and again[2:] == [10] * 4  # loaded, resumed, then whole
    assert (advice.outcome, _untimed(advice.table)) == (reference.outcome, _untimed(reference.table))
    third = _instrumented(monkeypatch, stop_in_call=None, module=imaging, function="train_cfm")
    hit = advise_sigma("gmm", sigmas=[0.0, 0.2], cache=tmp_path / "cache", **ADVISE_TINY)
    assert _untimed(hit.table) == _untimed(reference.table)
    assert third == []  # a cache hit
