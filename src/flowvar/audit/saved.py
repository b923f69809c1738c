"""The terminal summary of a saved audit (``flowvar show AUDIT_DIR``): the verdict, the convention and each test's
reading with its decisive numbers, read back from the ``result.json`` an ``--out`` folder holds."""

from __future__ import annotations

from typing import Any

from flowvar.audit import rules
from flowvar.audit.adapters import Convention
from flowvar.audit.core import READING, TEST_NAMES, untestable_why
from flowvar.errors import FlowvarError
from flowvar.results import Result


def _num(value: Any, spec: str = ".3g") -> str:
    """A number from result.json for a sentence ("–" when missing or NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "–"
    return format(value, spec)


def _landing(e: dict[str, Any]) -> str:
    """Pair recovery's row-alignment question, when its landing check fired (judged again from the shares, so an
    audit saved before ``landing_suspect`` was recorded shows it too); "" otherwise."""
    landed, baseline = e.get("fine", {}).get("landed_on_other_target"), e.get("landing_baseline")
    if _num(landed) == "–" or _num(baseline) == "–" or not rules.pair_landing_suspect(landed, baseline):
        return ""
    from flowvar.audit.sections import landing_question  # the report's wording (sections imports much more)

    return "; " + landing_question(landed, baseline, e.get("landing_baseline_source", "?"))


def claim_numbers(claim_id: str, evidence: dict[str, Any]) -> str:
    """The decisive numbers of one audit test, from its claim's evidence in ``result.json`` (what ``flowvar show``
    prints for a saved audit)."""
    e = evidence
    if claim_id == "audit.pair_recovery":
        fine, coarse = e.get("fine", {}), e.get("coarse", {})
        within = f" within the class ({e.get('n_classes')} classes)" if e.get("class_conditional") else \
            " under their own conditions" if e.get("continuous_conditions") else ""
        from flowvar.audit.sections import grid_text  # the report's wording of a reading's solver

        return (f"own partner reached by {_num(fine.get('accuracy_own'), '.0%')} of {e.get('n_pairs', '–')} training "
                f"sources{within} on the fine grid ({grid_text(fine)}), "
                f"{_num(coarse.get('accuracy_own'), '.0%')} on the coarse ({grid_text(coarse)}); "
                f"memorisation score m = {_num(fine.get('score'), '.2f')} / {_num(coarse.get('score'), '.2f')} "
                f"(chance {_num(e.get('chance'), '.1%')}); OT partner {_num(fine.get('accuracy_ot'), '.0%')}"
                + ("; the grids disagree" if e.get("grids_disagree") else "") + _landing(e))
    if claim_id == "audit.copying":
        held = e.get("heldout_copy_fraction")
        if _num(held) != "–":
            real = f"held-out real data {_num(held, '.1%')}"
        elif _num(e.get("baseline")) != "–" and "leave one out" in str(e.get("baseline_source", "")):
            real = f"real data (training items against the others) {_num(e.get('baseline'), '.1%')}"
        else:
            real = "held-out real data not given"
        se = e.get("excess_standard_error")
        share, share_se = e.get("copy_share_beyond_baseline"), e.get("copy_share_beyond_baseline_standard_error")
        beyond = (f"; copying beyond real data p = (c − b)/(1 − b) = {_num(share, '+.1%')} ± {_num(share_se, '.1%')}"
                  if _num(share_se) != "–" else  # an audit saved before p was recorded: its excess
                  f"; excess ± se {_num(e.get('excess'), '+.1%')} ± {_num(se, '.1%')}" if _num(se) != "–" else "")
        return (f"{_num(e.get('copy_fraction'), '.1%')} of {e.get('n_samples', '–')} fresh samples copy a training "
                f"item (d1/mean(d1..d{e.get('k', '–')}) < {_num(rules.COPY_RATIO, '.2f')}); {real}" + beyond)
    if claim_id == "audit.generalisation_gap":
        if "nn_ratio" not in e:
            return "not measured: no held-out data"
        se = e.get("nn_ratio_standard_error")
        return (f"ρ = {_num(e.get('nn_ratio'), '.2f')}" + (f" ± {_num(se, '.2f')}" if _num(se) != "–" else "")
                + f" (nearest-neighbour medians to {e.get('m', '–')} training vs "
                f"held-out items); MMD² to training {_num(e.get('mmd2_to_train'))}, to held-out "
                f"{_num(e.get('mmd2_to_heldout'))}"
                + ("; the majority of samples is novel (a median cannot exclude a copying minority)"
                   if e.get("majority_novel") else ""))
    if claim_id == "audit.gradient_signal":
        if e.get("error"):
            return f"not measured: {e['error']}"
        return (f"λ = {_num(e.get('loss_ratio'))} (loss), ν = {_num(e.get('variance_ratio'))} (gradient variance), "
                f"training pairs over fresh pairs at σ = 0")
    return ""


def saved_summary(result: Result) -> str:
    """The terminal summary of a saved audit (``result.json`` of an ``--out`` folder): the verdict, the convention,
    and each test's reading and decisive numbers (:func:`claim_numbers`); ``flowvar show AUDIT_DIR``."""
    config, metrics = result.config, result.metrics
    conv = config.get("convention") or {}
    kind = "conditions" if config.get("conditions", "none") not in ("none", None) else "labels"
    label = f", {kind} passed as {config['label_arg']}" if config.get("label_arg") else ""
    try:  # the label of the live report (time shape and output included; an older result.json lacks them)
        conv_text = str(Convention(**conv))
    except (TypeError, FlowvarError):
        conv_text = f"{conv.get('call', '?')} ({conv.get('time', '?')}, time scale {_num(conv.get('time_scale'), 'g')})"
    # the verdict's scope as the live report printed it (an older result.json has none: the word alone)
    verdict = rules.verdict_text(str(metrics.get("verdict", "?")), str(metrics.get("verdict_scope") or ""))
    lines = [f"verdict: {verdict}", f"convention: {conv_text}{label}",
             f"model: {config.get('model', '?')}", f"data: {config.get('data', '?')}"]
    for claim in result.claims:
        if claim.id in TEST_NAMES:
            # an untestable test's failed precondition and its remedy, as the console said it
            lines.append(f"  {TEST_NAMES[claim.id]}: {READING.get(claim.verdict, claim.verdict)}"
                         f"{untestable_why(claim)} — {claim_numbers(claim.id, claim.evidence)}")
    for claim in result.claims:  # how the families were read (a conflict, a caveat), as the live report said
        if claim.id == "audit.memorises":
            lines += [f"  {note}" for note in claim.evidence.get("notes", [])]
    return "\n".join(lines)


__all__ = ["claim_numbers", "saved_summary"]
