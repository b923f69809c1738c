"""Two audit findings from a new user's review (session 33): a model trained on fresh noise every batch (ordinary CFM)
read "generalising" from the pair tests alone once any noise was given as --pairs (finding 1), and a network whose
forward takes x alone was told to check the data's shape (finding 5).

Finding 1: the pair tests take --pairs as the model's fixed training pairs, and their generalising reading is what
pairs it never trained on give too; a verdict resting on them alone names that assumption on its verdict line
(:func:`flowvar.audit.rules.verdict_scope`), and the --pairs help and the no-pairs line say the pair tests are for
fixed training pairs. Finding 5: every call passing x and t given too many arguments leads the error with "the
model's forward takes only x" and the wrapper (:func:`flowvar.audit.fit.takes_only_x`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import typer

from audit_checks import importable_module, run_cli
from flowvar.audit import audit, rules
from flowvar.audit.adapters import Convention
from flowvar.audit.fit import CandidateScore, takes_only_x
from flowvar.audit.saved import saved_summary
from flowvar.errors import DataError
from flowvar.results import Result

D = 8
N = 32  # under COPY_MIN_LOO (50): without --heldout the copy test is untestable, so the samples family is undecided
SMALL = {"samples": 20, "steps": 10, "coarse_steps": 2, "grad_samples": 2, "t_bins": 1, "device": "cpu"}

NETS = '''
import torch
from torch import nn


class AffineFlow(nn.Module):
    """The straight-line flow of z -> 2 + 0.5 z in 8-D: v(x, t) = a + (b - 1) z, z = (x - a t)/(1 + (b - 1) t).
    It follows no training pairs: it is the population's flow, what a model trained on fresh noise learns."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.full((8,), 2.0))
        self.b = nn.Parameter(torch.full((8,), 0.5))

    def forward(self, x, t):
        t = t.reshape(-1, 1)
        z = (x - self.a * t) / (1 + (self.b - 1) * t)
        return self.a + (self.b - 1) * z


class XOnly(nn.Module):
    """The new user's XOnly: forward(x), no time — here the time-independent field v(x) = 2 - 0.5 x."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        with torch.no_grad():
            self.lin.weight.copy_(-0.5 * torch.eye(8))
            self.lin.bias.fill_(2.0)

    def forward(self, x):
        return self.lin(x)


class TimeFree(nn.Module):
    """The wrapper the error names: forward(x, t) returns self.net(x)."""

    def __init__(self):
        super().__init__()
        self.net = XOnly()

    def forward(self, x, t):
        return self.net(x)


class XT(nn.Module):
    """forward(x, t) taking no labels: called with labels as a third positional argument it gets one too many."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x, t):
        return self.lin(x)


def xonly():
    return XOnly()


def time_free():
    return TimeFree()
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    yield from importable_module(tmp_path_factory, "nu_nets", NETS)


def data(n: int = N, seed: int = 3) -> torch.Tensor:
    """n training items x1 = 2 + 0.5 z, z ~ N(0, I): the affine flow's population."""
    return 2 + 0.5 * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def unseen_noise(n: int = N, seed: int = 11) -> torch.Tensor:
    """Noise the model was never paired with: what a user of ordinary CFM passes as --pairs."""
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ 1. the verdict's scope, by rule

# one representative per family reading (as tests/test_audit.py's combination test)
READS = {"memorising": ("confirmed", "refuted"), "mixed": ("refuted", "confirmed"),
         "generalising": ("refuted", "inconclusive"), "undecided": ("inconclusive", "untestable")}


@pytest.mark.parametrize("pairs", list(READS))
@pytest.mark.parametrize("samples", list(READS))
def test_only_a_generalising_verdict_from_the_pairs_alone_is_scoped(pairs: str, samples: str) -> None:
    """Every outcome the composition returns: memorising, mixed, cannot tell, generalising from both families or from
    the samples alone carry no scope; generalising from the pairs family alone names the assumption it stands on."""
    verdicts = dict(zip(rules.FAMILIES["pairs"], READS[pairs], strict=True)) | dict(
        zip(rules.FAMILIES["samples"], READS[samples], strict=True))
    overall = rules.overall_verdict(verdicts)[0]
    scoped = pairs == "generalising" and samples == "undecided"
    assert rules.verdict_scope(verdicts) == (rules.PAIRS_ONLY_SCOPE if scoped else "")
    assert rules.verdict_text(overall, rules.verdict_scope(verdicts)) == (
        f"generalising ({rules.PAIRS_ONLY_SCOPE})" if scoped else overall)
    if scoped:  # and the caveat beside it says the assumption and its remedy
        assert overall == "generalising"
        assert rules.verdict_notes(verdicts) == [rules.SAMPLES_UNDECIDED_CAVEAT]
        assert rules.PAIRS_ASSUMPTION in rules.SAMPLES_UNDECIDED_CAVEAT


@pytest.mark.parametrize(("verdicts", "want"), [
    # the new user's reading: pair recovery and λ generalising, copying and the gap inconclusive
    ({"pair recovery": "refuted", "gradient signal": "refuted", "copying": "inconclusive",
      "generalisation gap": "inconclusive"}, rules.PAIRS_ONLY_SCOPE),
    ({"pair recovery": "refuted", "gradient signal": "inconclusive", "copying": "untestable",
      "generalisation gap": "untestable"}, rules.PAIRS_ONLY_SCOPE),
    ({"pair recovery": "inconclusive", "gradient signal": "refuted", "copying": "inconclusive"},
     rules.PAIRS_ONLY_SCOPE),
    ({"pair recovery": "refuted", "gradient signal": "refuted", "copying": "refuted"}, ""),  # both families
    ({"gradient signal": "untestable", "copying": "refuted"}, ""),  # no --pairs: the samples decide
    ({"pair recovery": "refuted", "copying": "confirmed"}, ""),  # memorising
    ({"pair recovery": "confirmed", "copying": "inconclusive"}, ""),  # memorising from the pairs proves them trained
    ({"pair recovery": "refuted", "gradient signal": "confirmed", "copying": "inconclusive"}, ""),  # mixed
    ({"gradient signal": "untestable", "copying": "inconclusive"}, ""),  # cannot tell
    ({}, ""),
])
def test_verdict_scope(verdicts: dict[str, str], want: str) -> None:
    assert rules.verdict_scope(verdicts) == want


def test_the_pairs_help_and_the_no_pairs_line_say_the_pair_tests_are_for_fixed_training_pairs() -> None:
    """The new user's path: the README passes --pairs, and nothing but docs/audit.md said what for. Now the help, the
    line said without --pairs and the pairs-only caveat all say it, and name ordinary CFM as the case to omit it."""
    from flowvar.cli import app

    command = typer.main.get_command(app).commands["audit"]  # type: ignore[attr-defined]
    (option,) = [p for p in command.params if "--pairs" in p.opts]
    assert "fixed (source, target) pairs" in option.help and "ReFlow" in option.help
    assert "leave it out for ordinary CFM (fresh noise every batch)" in option.help
    assert "if the model was trained on fixed pairs, pass their sources as --pairs" in rules.NO_PAIRS_CAVEAT
    assert "ordinary CFM" in rules.NO_PAIRS_CAVEAT and "pass the training sources" not in rules.NO_PAIRS_CAVEAT
    assert "leave --pairs out" in rules.SAMPLES_UNDECIDED_CAVEAT
    assert "speaks for the training pairs only" not in rules.SAMPLES_UNDECIDED_CAVEAT


# ------------------------------------------------------------------------------ 1. end to end


def test_unseen_noise_as_pairs_reads_generalising_on_the_pairs_alone_and_says_so(
        nets: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A field that follows no pairs (the population's flow), audited with noise it never saw as --pairs: both pair
    tests can only read generalising, the samples family is undecided (32 items, no --heldout: the copy test's
    leave-one-out baseline needs 50), and the verdict line names the assumption — in the console, summary.md,
    audit.html, result.json and flowvar show. Without --pairs the same audit cannot tell."""
    x1, x0 = data(), unseen_noise()
    report = audit(nets.AffineFlow(), x1, pairs=x0, **SMALL)
    verdicts = {c.id: c.verdict for c in report.result.claims}
    assert verdicts["audit.pair_recovery"] == "refuted"  # no own partner beyond chance: what unseen pairs give
    assert verdicts["audit.copying"] == "untestable" and verdicts["audit.generalisation_gap"] == "untestable"
    assert report.verdict == "generalising" and report.verdict_scope == rules.PAIRS_ONLY_SCOPE
    assert report.verdict_line == f"generalising ({rules.PAIRS_ONLY_SCOPE})"
    assert report.summary().splitlines()[0] == f"verdict: generalising ({rules.PAIRS_ONLY_SCOPE})"
    assert report.reasons[-1] == rules.SAMPLES_UNDECIDED_CAVEAT
    memorises = next(c for c in report.result.claims if c.id == "audit.memorises")
    assert memorises.verdict == "refuted" and memorises.evidence["scope"] == rules.PAIRS_ONLY_SCOPE
    assert report.result.metrics["verdict_scope"] == rules.PAIRS_ONLY_SCOPE

    out = report.write(tmp_path / "a")
    assert (out / "summary.md").read_text().splitlines()[0] == \
        f"# Audit verdict: **generalising** ({rules.PAIRS_ONLY_SCOPE})"
    assert "(on the pair tests alone, which take --pairs as the model&#x27;s fixed training pairs)" in \
        (out / "audit.html").read_text()
    saved = Result.load(out / "result.json")
    assert saved_summary(saved).splitlines()[0] == f"verdict: generalising ({rules.PAIRS_ONLY_SCOPE})"
    # a result.json written before the scope was recorded: the word alone, as it was printed then
    raw = json.loads((out / "result.json").read_text())
    del raw["metrics"]["verdict_scope"]
    (out / "result.json").write_text(json.dumps(raw))
    assert saved_summary(Result.load(out / "result.json")).splitlines()[0] == "verdict: generalising"

    # the command line prints the same line
    np.save(tmp_path / "x1.npy", x1.numpy())
    np.save(tmp_path / "x0.npy", x0.numpy())
    torch.save(nets.AffineFlow(), tmp_path / "affine_whole.pt")
    args = ["--checkpoint", str(tmp_path / "affine_whole.pt"), "--data", str(tmp_path / "x1.npy"), "--samples",
            "20", "--steps", "10", "--coarse-steps", "2", "--grad-samples", "2", "--t-bins", "1", "--device", "cpu"]
    code, stdout, err = run_cli([*args, "--pairs", str(tmp_path / "x0.npy"), "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"verdict: generalising ({rules.PAIRS_ONLY_SCOPE})"

    # without --pairs: cannot tell, with no scope, and the line on what did not run
    bare = audit(nets.AffineFlow(), x1, **SMALL)
    assert (bare.verdict, bare.verdict_scope, bare.verdict_line) == ("cannot tell", "", "cannot tell")
    assert bare.reasons[-1] == rules.NO_PAIRS_CAVEAT and bare.result.metrics["verdict_scope"] == ""


def test_a_verdict_the_samples_share_carries_no_scope(nets: ModuleType) -> None:
    """The same field and unseen --pairs with held-out data: the copy test decides too (no copies beyond the
    held-out items'), the verdict no longer rests on the pairs alone, and the line is the word."""
    x1, x0 = data(), unseen_noise()
    held = data(64, seed=5)
    report = audit(nets.AffineFlow(), x1, pairs=x0, heldout=held, **(SMALL | {"samples": 200}))
    verdicts = {c.id: c.verdict for c in report.result.claims}
    assert verdicts["audit.copying"] == "refuted" and verdicts["audit.pair_recovery"] == "refuted"
    assert (report.verdict, report.verdict_scope) == ("generalising", "")
    assert report.summary().splitlines()[0] == "verdict: generalising"
    assert rules.SAMPLES_UNDECIDED_CAVEAT not in report.reasons


# ------------------------------------------------------------------------------ 5. a forward without time

LEAD = "the model's forward takes only x, no time: flowvar needs a velocity field v(x, t) (or v(t, x))"


def test_a_forward_taking_only_x_is_told_so_first(nets: ModuleType) -> None:
    """The new user's XOnly: every call passing x and t raises 'takes 2 positional arguments but 3 were given'. The
    error leads with that and the wrapper, not with the data's shape (which is fine) or integer timesteps; the
    calls' own errors follow."""
    x1 = data()
    with pytest.raises(DataError) as caught:
        audit(nets.XOnly(), x1, **SMALL)
    text = str(caught.value)
    assert text.startswith(LEAD), text
    assert "forward(self, x, t) returns self.net(x)" in text and "submodule 'net'" in text
    assert "xt, tx, diffusers: TypeError: XOnly.forward() takes 2 positional arguments but 3 were given" in text
    assert "under the cat call, its layer lin (Linear) takes 8 input features and was given (128, 9)" in text
    assert "shape and channels" not in text and "integer timesteps" not in text
    # under a requested convention too
    with pytest.raises(DataError) as caught:
        audit(nets.XOnly(), x1, convention="xt", **SMALL)
    assert str(caught.value).startswith(LEAD) and "the xt (data_at_1, time scale 1) call: TypeError" in \
        str(caught.value)
    # a TorchScript module says it its own way ("expected at most 2 argument(s) but received 3 argument(s)")
    with pytest.raises(DataError, match=r"^the model's forward takes only x, no time"):
        audit(torch.jit.script(nets.XOnly()), x1, **SMALL)


def test_the_wrapper_it_names_runs_on_the_networks_own_checkpoint(nets: ModuleType, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    x1 = data()
    np.save(tmp_path / "x1.npy", x1.numpy())
    torch.save(nets.XOnly().state_dict(), tmp_path / "xonly.pt")
    common = ["--checkpoint", str(tmp_path / "xonly.pt"), "--data", str(tmp_path / "x1.npy"), "--samples", "20",
              "--steps", "10", "--coarse-steps", "2", "--grad-samples", "2", "--t-bins", "1", "--device", "cpu"]
    code, _, err = run_cli(["--model", "nu_nets:xonly", *common, "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"flowvar: error: {LEAD}"), err
    assert not (tmp_path / "a").exists()
    code, out, err = run_cli(["--model", "nu_nets:time_free", *common, "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert "loaded into its submodule 'net'" in out and "verdict:" in out


def score(call: str, error: str) -> CandidateScore:
    return CandidateScore(Convention(call), False, error=error)


def test_takes_only_x_reads_the_argument_counts() -> None:
    """N − (M − p) ≤ 1 from 'takes N … but M were given' (p the arguments passed): x alone; a forward(x, t) given
    labels as a third positional argument, or failing for another reason, is not."""
    too_many = "TypeError: XOnly.forward() takes 2 positional arguments but 3 were given"
    script = ("RuntimeError: forward() expected at most 2 argument(s) but received 3 argument(s). Declaration: "
              "forward(__torch__.XOnly self, Tensor x) -> Tensor")
    others = [score("cat", "RuntimeError: mat1 and mat2 shapes cannot be multiplied (128x9 and 8x64)"),
              score("flow_matching", "TypeError: XOnly.forward() got an unexpected keyword argument 't'")]
    assert takes_only_x([score(c, too_many) for c in ("xt", "tx", "diffusers")] + others)
    assert takes_only_x([score("xt", script), score("tx", script)])
    assert takes_only_x([score("xt", "TypeError: K.forward() takes from 2 to 3 positional arguments but 5 were "
                                     "given")], positional_labels=True)  # forward(x, scale=None) given x, t, y
    # forward(x, t) given labels positionally: it takes two, one too few for the labels — not a time problem
    assert not takes_only_x([score("xt", "TypeError: XT.forward() takes 3 positional arguments but 4 were given")],
                            positional_labels=True)
    assert takes_only_x([score("xt", "TypeError: X.forward() takes 2 positional arguments but 4 were given")],
                        positional_labels=True)
    # one two-argument call failing otherwise, or none tried, says nothing
    assert not takes_only_x([score("xt", too_many), score("tx", "RuntimeError: shapes cannot be multiplied")])
    assert not takes_only_x(others)
    assert not takes_only_x([])


def test_positional_labels_are_counted(nets: ModuleType) -> None:
    """Labels passed as model(x, t, y): an XOnly gets two too many ('takes 2 … but 4 were given') and is told it
    takes only x; a forward(x, t) gets one too many and is not."""
    x1 = data()
    labels = torch.arange(N) % 4
    with pytest.raises(DataError, match=r"^the model's forward takes only x"):
        audit(nets.XOnly(), x1, labels=labels, label_arg="positional", **SMALL)
    with pytest.raises(DataError) as caught:
        audit(nets.XT(), x1, labels=labels, label_arg="positional", **SMALL)
    assert "takes only x" not in str(caught.value)
    assert "takes 3 positional arguments but 4 were given" in str(caught.value)


def test_a_bare_linear_given_items_of_another_width_is_told_about_the_data() -> None:
    """CI of a5ae2f3: a forward(x) network is also how the cat convention is called, so when the cat call reached a
    layer whose width is neither the items' (a time-free network) the data's shape leads, not the missing time."""
    from flowvar.audit.fit import _cat_width_allows_time_free

    assert not _cat_width_allows_time_free(
        "under the cat call, the model itself (Linear) takes 4 input features and was given (128, 6)", (5,))
    assert _cat_width_allows_time_free(
        "under the cat call, the model itself (Linear) takes 8 input features and was given (128, 9)", (8,))
    assert _cat_width_allows_time_free("", (8,)) and _cat_width_allows_time_free("under the xt call, x", (8,))
