"""Review trainR2, finding 3: a resume checks the model's initial weights (another init seed was silently handed the
old run's model; now a ResumeWarning says so), while every legitimate way of re-calling a run resumes quietly."""

from __future__ import annotations

import warnings

import pytest
import torch

from flowvar.couplings import FixedPairs
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.seeding import seeded_global_rng
from flowvar.train import CHECKPOINT_NAME, ResumeWarning, TrainConfig, load_checkpoint, save_checkpoint, train

PAIRS = FixedPairs(torch.randn(64, 2, generator=torch.Generator().manual_seed(0)),
                   torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) + 3)


def model(init: int = 11) -> MLPField:
    with seeded_global_rng(init):
        return MLPField(2, 16, 2, "silu")


def config(steps: int = 12) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=16, log_every=0, checkpoint_every=5)


class Crash:
    """Raises at step ``at``: an interruption between checkpoints."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, step, model, path, loss_value):
        if step == self.at:
            raise RuntimeError("crash")


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)
        yield


def _init_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "other initial weights" in str(w.message)]


def test_a_finished_run_re_called_with_another_init_seed_is_told_it_is_the_old_run(tmp_path):
    first = model(11)
    train(first, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path)
    second = model(12)
    with pytest.warns(ResumeWarning, match="started from other initial weights .* that run is resumed .*a new "
                                           "replicate.*another checkpoint_dir"):
        train(second, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path)
    assert same(first, second)  # the old run's weights, as the warning says


def test_an_interrupted_run_resumed_with_another_init_seed_is_told_so(tmp_path):
    with pytest.raises(RuntimeError):
        train(model(11), CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path, callbacks=[Crash(7)])
    with pytest.warns(ResumeWarning, match="other initial weights"):
        assert train(model(12), CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path).resumed_from == 5


def test_a_rebuilt_model_of_the_same_seed_resumes_bit_identically(tmp_path):
    reference = model()
    train(reference, CFMLoss(), PAIRS, config())
    with pytest.raises(RuntimeError):
        train(model(), CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path, callbacks=[Crash(7)])
    resumed = model()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = train(resumed, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path)
    assert result.resumed_from == 5 and same(resumed, reference) and not _init_warnings(record)


def test_the_same_object_re_called_after_a_crash_or_to_extend_its_run_resumes(tmp_path):
    reference = model()
    train(reference, CFMLoss(), PAIRS, config(20))
    m = model()
    with pytest.raises(RuntimeError):  # the object now holds step 6's weights, the checkpoint step 5's
        train(m, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path, callbacks=[Crash(7)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert train(m, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path).resumed_from == 5  # a notebook re-run
        assert train(m, CFMLoss(), PAIRS, config(20), checkpoint_dir=tmp_path).resumed_from == 12  # extended
    assert same(m, reference) and not _init_warnings(record)


def test_the_same_object_re_initialised_after_a_crash_is_told_so(tmp_path):
    m = model(11)
    with pytest.raises(RuntimeError):
        train(m, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path, callbacks=[Crash(7)])
    m.load_state_dict(model(12).state_dict())
    with pytest.warns(ResumeWarning, match="other initial weights"):
        train(m, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path)


def test_a_model_holding_the_checkpoints_weights_resumes(tmp_path):
    with pytest.raises(RuntimeError):
        train(model(11), CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path, callbacks=[Crash(7)])
    other = model(12)  # another process: weights loaded by hand, as the refusal's message says
    other.load_state_dict(load_checkpoint(tmp_path / CHECKPOINT_NAME)["model"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert train(other, CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path).resumed_from == 5
    assert not _init_warnings(record)


def test_a_checkpoint_without_the_initial_weights_still_resumes(tmp_path):
    with pytest.raises(RuntimeError):
        train(model(11), CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path, callbacks=[Crash(7)])
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    del state["signature"]["init_weights"]  # as an earlier flowvar wrote it
    save_checkpoint(state, tmp_path)
    result = train(model(12), CFMLoss(), PAIRS, config(), checkpoint_dir=tmp_path)
    assert result.resumed_from == 5 and result.steps_done == 12
    assert "init_weights" not in load_checkpoint(tmp_path / CHECKPOINT_NAME)["signature"]  # not invented later
