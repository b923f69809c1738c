"""``report.html`` on a phone and from the keyboard, checked on the HTML itself (tests/test_browser.py measures the
same in Chromium): at ≤ 600 px each row's verdict shows without sideways scrolling — in the verdict table it follows
the claim and the experiment column is hidden, in a paper-beside-ours table it follows the row's first cell — and a
figure's zoom checkbox is hidden only visually (it stays in the tab order), the focused figure has an outline, and
each caption says that the figure can be enlarged and how."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from flowvar.report import render_html
from flowvar.report.html import ZOOM_HINT

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(scope="module")
def collection() -> dict[str, Any]:
    return json.loads((RESULTS / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def page(collection: dict[str, Any]) -> str:
    return render_html(collection, RESULTS)


def css(page: str) -> str:
    return re.search(r"<style>(.*?)</style>", page, flags=re.S).group(1)


def phone_rules(page: str) -> str:
    """The body of the page's ``@media (max-width:600px)`` block (its rules are one level deep)."""
    m = re.search(r"@media \(max-width:600px\)\{((?:[^{}]*\{[^{}]*\})*)[^{}]*\}", css(page))
    assert m, "no @media (max-width:600px) block"
    return m.group(1)


def cells(row: str) -> list[str]:
    """The ``<th>``/``<td>`` opening tags and text of a table row, in order: ``["th class=exp|experiment", …]``."""
    return [f"{tag.strip()}|{re.sub(r'<[^>]+>', '', text)}"
            for tag, text in re.findall(r"<(t[hd][^>]*)>(.*?)</t[hd]>", row, flags=re.S)]


def test_the_verdict_table_puts_the_verdict_after_the_claim_and_hides_the_experiment_on_a_phone(page: str) -> None:
    i = page.index('<section id="verdicts">')
    table = page[i:page.index("</section>", i)]
    assert "<table class=verdicts>" in table
    head = cells(re.search(r"<thead><tr>(.*?)</tr></thead>", table).group(1))
    assert head == ["th class=exp|experiment", "th|claim", "th class=verdict|verdict", "th|kind",
                    "th class=nums|decisive numbers"]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], flags=re.S)
    assert len(rows) > 50
    for row in rows:  # every row: experiment (hidden on a phone), claim, verdict badge, kind, numbers
        c = cells(row)
        assert len(c) == 5 and c[0].startswith("td class=exp|") and c[2].startswith("td class=verdict|"), c
        assert c[2].split("|")[1] in ("confirmed", "refuted", "inconclusive", "untestable"), c
    phone = phone_rules(page)
    assert "table.verdicts .exp{display:none}" in phone
    assert re.search(r"table\.verdicts td\.nums\{min-width:\d+em\}", phone)  # numbers scroll, rows stay short
    # a long per-row mark ("confirmed (the paper's own margin is below …)") wraps instead of widening its column
    assert re.search(r"td\.verdict \.badge\{white-space:normal;max-width:\d+em\}", css(page))
    assert ".exp{display:none}" not in css(page).replace(phone, "")  # a wide screen keeps the column


def test_a_failed_experiment_is_named_outside_the_column_a_phone_hides(collection: dict[str, Any]) -> None:
    broken = copy.deepcopy(collection)
    e = broken["experiments"][0]
    e.update(result=None, status="failed", error="RuntimeError: boom")
    page = render_html(broken, RESULTS)
    row = re.search(rf'<tr><td class=exp><a href="#exp-{e["name"]}">.*?</tr>', page).group(0)
    assert cells(row) == [f"td class=exp|{e['name']}", f"td|none: {e['name']} has no result",
                          "td class=verdict|failed", "td|—", "td class=nums|RuntimeError: boom"]


def test_beside_ours_tables_put_the_verdict_second(page: str) -> None:
    tables = re.findall(r'<h3 id="table-[^"]+">[^<]*</h3><div class=scroll><table>(.*?)</table>', page, flags=re.S)
    marked = [t for t in tables if "class=verdict" in t]
    assert len(marked) >= 4  # fig6, table1, table2 (two), table3 in the quick run
    for t in marked:
        head = cells(re.search(r"<thead><tr>(.*?)</tr></thead>", t).group(1))
        assert head[1].startswith("th class=verdict|") and sum("class=verdict" in h for h in head) == 1, head
        for row in re.findall(r"<tr>(.*?)</tr>", t.split("<tbody>")[1], flags=re.S):
            c = cells(row)
            assert len(c) == len(head) and c[1].startswith("td class=verdict|"), c
    table2 = next(t for t in marked if "paper: L2 to OT" in t)  # the row's setting, then its verdict, then numbers
    first = cells(re.search(r"<tbody><tr>(.*?)</tr>", table2).group(1))
    assert first[0] == "td|N = 5,000 (ours 64), CFM(σ = 0.05)" and first[1].split("|")[1] in ("refuted", "confirmed")
    assert first[2] == "td|34.25 ± 7.54"


def test_a_figure_zooms_from_the_keyboard_and_says_so(page: str, collection: dict[str, Any]) -> None:
    style = css(page)
    hidden = re.search(r"label\.zoom input\{([^}]*)\}", style).group(1)
    assert "display:none" not in hidden and "visibility:hidden" not in hidden  # both would drop it from the tab order
    assert "position:absolute" in hidden and "clip-path:inset(50%)" in hidden and "width:1px" in hidden
    # the focused figure's outline lies inside the image: the figure (overflow-x:auto) clips anything outside it
    assert re.search(r"label\.zoom input:focus-visible\+img\{outline:3px solid [^;]+;outline-offset:-3px\}", style)
    assert "label.zoom input:checked+img{max-width:none" in style
    figures = sum(len(e["result"]["figures"]) for e in collection["experiments"] if e.get("result"))
    zooms = re.findall(r"<figure><label class=zoom [^>]*><input type=checkbox><img ", page)
    assert len(zooms) == figures > 0
    assert "Space" in ZOOM_HINT and "enlarge" in ZOOM_HINT
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, flags=re.S)
    assert len(captions) == figures and all(f"<span class=hint>{ZOOM_HINT}</span>" in c for c in captions)
    assert re.search(r"@media print\{[^{]*\.hint[^{]*\{display:none\}", style)  # paper cannot be clicked
    assert "<script" not in page and "http://" not in page and "https://" not in page
