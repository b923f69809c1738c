"""``report.html`` in a real browser: a quick ``flowvar reproduce`` of four cheap experiments, rendered by headless
Chromium at a desktop width (1280 px) and a phone width (390 px). Every image decodes, nothing overflows the page
width, every in-page link resolves, and nothing is loaded from outside the page.

The page itself carries no script; a probe page loads it in two iframes of those widths (same origin through
``--allow-file-access-from-files``) and writes what it measured into its own DOM, which ``--dump-dom`` prints.
Skipped, saying why, where no Chromium is installed (``make browser`` installs the distribution's package when it
can).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from flowvar.reproduce import Options, parse_only, reproduce

CHEAP = "counterexample1,prop1,lemma1,fig4"
WIDTHS = (1280, 390)
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
"""A 1×1 PNG: an image that decodes, for the probe's own test."""
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

PROBE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
{frames}
<pre id="probe-result">pending</pre>
<script>
window.addEventListener('load', function () {{
  var out = {{}};
  [].slice.call(document.querySelectorAll('iframe')).forEach(function (f) {{
    var w = f.contentWindow, d = f.contentDocument, o = {{}};
    o.inner = w.innerWidth;
    o.scroll_width = d.documentElement.scrollWidth;
    o.client_width = d.documentElement.clientWidth;
    var imgs = [].slice.call(d.images);
    o.images = imgs.length;
    o.undecoded = imgs.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }})
                      .map(function (i) {{ return i.alt.slice(0, 60); }});
    // elements sticking out of the page (those inside a horizontally scrolling table box are allowed to)
    o.overflowing = [].slice.call(d.querySelectorAll('body *')).filter(function (el) {{
      var r = el.getBoundingClientRect();
      return r.width > 0 && r.right > d.documentElement.clientWidth + 1 && !el.parentElement.closest('.scroll');
    }}).slice(0, 10).map(function (el) {{
      return el.tagName + '.' + el.className + ' ' + el.textContent.slice(0, 40);
    }});
    var links = [].slice.call(d.querySelectorAll('a[href]'));
    o.links = links.length;
    o.broken = links.filter(function (a) {{
      var h = a.getAttribute('href');
      return h.charAt(0) !== '#' || !d.getElementById(decodeURIComponent(h.slice(1)));
    }}).map(function (a) {{ return a.getAttribute('href'); }}).slice(0, 10);
    o.external = [].slice.call(d.querySelectorAll('[src],[href],[srcset],[data],[poster]')).map(function (el) {{
      return el.getAttribute('src') || el.getAttribute('href') || el.getAttribute('srcset') || '';
    }}).filter(function (u) {{ return u && u.charAt(0) !== '#' && u.indexOf('data:') !== 0; }})
      .map(function (u) {{ return u.slice(0, 80); }});
    o.resources = w.performance.getEntriesByType('resource').map(function (e) {{ return e.name.slice(0, 80); }});
    var zooms = [].slice.call(d.querySelectorAll('figure label.zoom'));
    // the zoom is reachable from the keyboard: its checkbox takes focus (display:none would not), and the focused
    // figure shows an outline (checked before the clicks below: after a click, Chromium shows no focus ring on a
    // focus() from script, as after a mouse click)
    o.zoom_unfocusable = zooms.filter(function (z) {{
      var box = z.querySelector('input'), img = z.querySelector('img');
      box.focus({{preventScroll: true}});
      var ok = d.activeElement === box && box.tabIndex >= 0
               && w.getComputedStyle(img).outlineStyle !== 'none';
      box.blur();
      return !ok;
    }}).map(function (z) {{ return z.querySelector('img').alt.slice(0, 60); }});
    // a click on a figure shows it at its own size inside its frame (the page does not widen), a second fits it again
    o.zoomable = zooms.length;
    o.zoom_broken = zooms.filter(function (z) {{
      var img = z.querySelector('img'), fitted = img.getBoundingClientRect().width;
      img.click();
      var full = img.clientWidth, page = d.documentElement.scrollWidth;
      img.click();
      var back = img.getBoundingClientRect().width;
      return Math.abs(full - img.naturalWidth) > 1 || page > d.documentElement.clientWidth
             || Math.abs(back - fitted) > 1 || fitted > d.documentElement.clientWidth;
    }}).map(function (z) {{ return z.querySelector('img').alt.slice(0, 60); }});
    // every verdict cell (verdict table, paper-beside-ours tables) lies inside the window and inside its table's
    // scroll box as the page opens, so a phone shows each row's verdict without scrolling sideways
    var view = d.documentElement.clientWidth;
    var cells = [].slice.call(d.querySelectorAll('td.verdict'));
    o.verdict_cells = cells.length;
    o.verdicts_off_screen = cells.filter(function (c) {{
      var r = c.getBoundingClientRect(), box = c.closest('.scroll');
      var right = Math.min(view, box ? box.getBoundingClientRect().right : view);
      return r.width === 0 || r.left < 0 || r.right > right + 1;
    }}).slice(0, 10).map(function (c) {{
      return c.closest('tr').textContent.slice(0, 60);
    }});
    o.css_urls = [].slice.call(d.styleSheets).map(function (s) {{
      return [].slice.call(s.cssRules).map(function (r) {{ return r.cssText; }}).join(' ');
    }}).join(' ').indexOf('url(') >= 0;
    out[f.id] = o;
  }});
  document.getElementById('probe-result').textContent = JSON.stringify(out);
}});
</script></body></html>
"""


def chromium() -> str | None:
    """The first Chromium-family browser on PATH (or $FLOWVAR_CHROMIUM), else None."""
    env = os.environ.get("FLOWVAR_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def measure(browser: str, page: Path, tmp: Path) -> dict[str, dict]:
    """Load ``page`` in iframes of :data:`WIDTHS` inside a probe page and return what the probe measured, per width
    (keys ``w1280``, ``w390``)."""
    frames = "\n".join(f'<iframe id="w{w}" src="{page.name}" style="width:{w}px;height:800px;border:0"></iframe>'
                       for w in WIDTHS)
    probe = page.parent / "probe.html"
    probe.write_text(PROBE.format(frames=frames), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--allow-file-access-from-files", "--virtual-time-budget=15000", "--window-size=1800,1000",
           f"--user-data-dir={tmp / 'profile'}", "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe-result">([^<]*)</pre>', done.stdout)
    assert m, f"the probe page did not render (exit {done.returncode}): {done.stderr[-800:]}"
    assert m.group(1) != "pending", "the probe did not run: the page's load event never came"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``report.html`` of ``flowvar reproduce --quick --only counterexample1,prop1,lemma1,fig4``."""
    out = tmp_path_factory.mktemp("browser") / "run"
    summary = reproduce(Options(out=out, quick=True, only=parse_only([CHEAP]), quiet=True))
    assert not summary.failed, [(o.name, o.error) for o in summary.failed]
    return summary.report_html


@pytest.mark.slow
def test_report_renders_in_chromium(quick_report: Path, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (install the distribution's `chromium` package: `make browser`, or set "
                    "FLOWVAR_CHROMIUM); the report's browser checks did not run")
    figures = sum(len(json.loads((p / "result.json").read_text())["figures"])
                  for p in quick_report.parent.iterdir() if (p / "result.json").is_file())
    page = measure(browser, quick_report, tmp_path)
    assert set(page) == {f"w{w}" for w in WIDTHS}
    for width, o in page.items():
        assert o["inner"] == int(width[1:]), f"{width}: the frame is {o['inner']} px wide"
        assert o["images"] == figures > 0, f"{width}: {o['images']} images for {figures} figures"
        assert not o["undecoded"], f"{width}: images that do not decode: {o['undecoded']}"
        assert o["zoomable"] == figures and not o["zoom_broken"], (
            f"{width}: figures whose click does not show them at full size inside their frame: {o['zoom_broken']}")
        assert not o["zoom_unfocusable"], f"{width}: figures the keyboard cannot enlarge: {o['zoom_unfocusable']}"
        assert o["verdict_cells"] > 0 and not o["verdicts_off_screen"], (
            f"{width}: rows whose verdict is off-screen until the table is scrolled: {o['verdicts_off_screen']}")
        assert o["scroll_width"] <= o["client_width"], (
            f"{width}: the page is {o['scroll_width']} px wide in a {o['client_width']} px window; sticking out: "
            f"{o['overflowing']}")
        assert not o["overflowing"], f"{width}: elements wider than the page: {o['overflowing']}"
        assert o["links"] > 20 and not o["broken"], f"{width}: in-page links that resolve nowhere: {o['broken']}"
        assert not o["external"] and not o["resources"] and not o["css_urls"], (
            f"{width}: the page loads from outside itself: {o['external'] or o['resources'] or 'a CSS url()'}")


@pytest.mark.slow
def test_the_partial_paper_scale_report_renders_in_chromium(tmp_path: Path) -> None:
    """The published paper-scale run (results/full: interrupted, some experiments not selected) rendered by this
    code: its banner's list of what the run lacks, its longer tables and its figures fit 1280 and 390 px too."""
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (install the distribution's `chromium` package: `make browser`)")
    from flowvar.report import load_collection, render_html

    folder = Path(__file__).resolve().parents[1] / "results" / "full"
    collection = load_collection(folder)
    assert collection is not None, f"{folder} holds no results.json"
    report = tmp_path / "report.html"
    report.write_text(render_html(collection, folder), encoding="utf-8")
    figures = sum(len(e["result"]["figures"]) for e in collection["experiments"] if e.get("result"))
    for width, o in measure(browser, report, tmp_path).items():
        assert o["images"] == figures > 0 and not o["undecoded"], f"{width}: {o['undecoded']}"
        assert o["scroll_width"] <= o["client_width"] and not o["overflowing"], f"{width}: {o['overflowing']}"
        assert o["links"] > 20 and not o["broken"], f"{width}: in-page links that resolve nowhere: {o['broken']}"
        assert not o["external"] and not o["resources"], f"{width}: {o['external'] or o['resources']}"
        assert o["verdict_cells"] > 0 and not o["verdicts_off_screen"], f"{width}: {o['verdicts_off_screen']}"
        assert o["zoomable"] == figures and not o["zoom_unfocusable"], f"{width}: {o['zoom_unfocusable']}"
    assert "Not in this run:" in report.read_text(encoding="utf-8")


def test_the_published_quick_report_shows_every_verdict_at_phone_width(tmp_path: Path) -> None:
    """The published quick run (results/: every experiment, the widest tables: Table 2's beside ours is ~800 px at
    390 px) rendered by this code: at 390 px each row's verdict in the verdict table and in every paper-beside-ours
    table shows without scrolling sideways, and every figure can be enlarged from the keyboard."""
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (install the distribution's `chromium` package: `make browser`)")
    from flowvar.report import load_collection, render_html

    folder = Path(__file__).resolve().parents[1] / "results"
    collection = load_collection(folder)
    assert collection is not None, f"{folder} holds no results.json"
    report = tmp_path / "report.html"
    report.write_text(render_html(collection, folder), encoding="utf-8")
    claims = sum(len(e["result"]["claims"]) for e in collection["experiments"] if e.get("result"))
    figures = sum(len(e["result"]["figures"]) for e in collection["experiments"] if e.get("result"))
    for width, o in measure(browser, report, tmp_path).items():
        # one verdict cell per claim in the verdict table, plus one per row of the beside-ours tables
        assert o["verdict_cells"] > claims, f"{width}: {o['verdict_cells']} verdict cells for {claims} claims"
        assert not o["verdicts_off_screen"], f"{width}: verdicts off-screen: {o['verdicts_off_screen']}"
        assert o["zoomable"] == figures > 0 and not o["zoom_unfocusable"], f"{width}: {o['zoom_unfocusable']}"
        assert o["scroll_width"] <= o["client_width"] and not o["overflowing"], f"{width}: {o['overflowing']}"


def test_the_probe_catches_overflow_broken_links_and_external_loads(tmp_path: Path) -> None:
    """The probe is not blind: a page with a too-wide block, a dangling anchor and an external image fails each
    check."""
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH (install the distribution's `chromium` package: `make browser`)")
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><div style="width:2000px">wide</div><a href="#nowhere">x</a>'
                   '<img alt="remote" src="http://127.0.0.1:9/x.png">'
                   '<div class=scroll style="width:200px;overflow-x:auto"><table><tr><td style="min-width:3000px">'
                   'wide data</td><td class=verdict>refuted</td></tr></table></div>'
                   f'<figure><label class=zoom><input type=checkbox style="display:none"><img alt="local" '
                   f'src="data:image/png;base64,{PIXEL}"></label></figure></body></html>', encoding="utf-8")
    page = measure(browser, bad, tmp_path)
    for o in page.values():
        assert o["scroll_width"] > o["client_width"] and o["overflowing"]
        assert o["broken"] == ["#nowhere"]
        assert o["external"] and o["undecoded"] == ["remote"]
        assert o["verdict_cells"] == 1 and o["verdicts_off_screen"] == ["wide datarefuted"]
        assert o["zoom_unfocusable"] == ["local"]  # a display:none checkbox takes no focus
