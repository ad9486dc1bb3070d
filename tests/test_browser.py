"""The rendered book in headless Chromium with no network: diagrams, math, launch
buttons.

The site is built without executing the notebooks (their committed outputs are used)
into a temporary folder, with one extra probe page holding a known diagram and known
equations, so the check never passes for want of content.
``CROSSALIGN_SITE=_build/html`` checks an already built site instead. The site is served
on 127.0.0.1; Chromium can reach nothing else (see ``chromium_cdp.py``), and every
request a page makes is recorded and counted.

Screenshots of the landing page and of chapter 4 (when it exists) go to
``_build/screenshots/``. Run by ``make browser`` (part of ``make test``), which sets
``CROSSALIGN_REQUIRE_BROWSER=1`` so that a missing Chromium fails instead of skipping.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from chromium_cdp import HeadlessChromium, PageEvents, find_chromium, leaves_localhost

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = ROOT / "_build" / "screenshots"
VENDOR_STAMP = ROOT / "book" / "_static" / "vendor" / "assets.json"
CHAPTER_4 = "book/04_alignment_pipeline.html"
PROBE_NAME = "zz_offline_probe"
PROBE_PAGE = f"book/{PROBE_NAME}.html"
PROBE_LABELS = ("probe image encoder", "probe text encoder", "probe shared space")
PROBE_SOURCE = """# Offline rendering probe

Built only by `tests/test_browser.py`: a known diagram, known equations, an exercise
and a solution hidden in a dropdown.

```{mermaid}
flowchart LR
  probe_image[probe image encoder] --> probe_space[probe shared space]
  probe_text[probe text encoder] --> probe_space
```

The temperature $\\tau > 0$ scales every similarity $s_{ij}$ in

$$
\\mathcal{L} = -\\frac{1}{N} \\sum_{i=1}^{N}
  \\log \\frac{e^{s_{ii}/\\tau}}{\\sum_{j=1}^{N} e^{s_{ij}/\\tau}}
$$

```{exercise} Probe exercise
:label: probe-exercise

Show that $1 + 1 = 2$.
```

:::{admonition} Solution
:class: dropdown

The hidden answer is $x = 1$.
:::
"""
PROBE_MATH_ELEMENTS = 5
# Not part of any page: fetched once on purpose to prove that the wall holds and is
# counted.
NETWORK_PROBE_URL = "http://network-probe.example/blocked"
REFRESH = re.compile(
    r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.IGNORECASE
)
REQUIRE_BROWSER = os.environ.get("CROSSALIGN_REQUIRE_BROWSER") == "1"

# Runs in each page once it has loaded: waits for MathJax and Mermaid, then reports.
RENDER_REPORT_JS = r"""
(async () => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const deadline = Date.now() + 20000;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const diagrams = () => [...document.querySelectorAll(".mermaid")]
      .filter((el) => !el.closest(".mermaid-fullscreen-modal"));
  // Mermaid's final SVG names its diagram type (an error SVG says "error").
  const rendered = (el) => {
    const svg = el.querySelector("svg[aria-roledescription]");
    return svg !== null && svg.getAttribute("aria-roledescription") !== "error";
  };
  while (Date.now() < deadline) {
    const pending = diagrams().filter((el) => !rendered(el));
    if (pending.length === 0) break;
    for (const el of pending) {  // diagrams in closed dropdowns render once shown
      let box = el.closest("details");
      for (; box; box = box.parentElement.closest("details")) box.open = true;
      if (el.hasAttribute("data-mermaid-deferred")) el.scrollIntoView();
    }
    await sleep(100);
  }
  // Code the reader reads (cells' code and code in the prose, not printed output): how
  // many columns fit in a code box, and the blocks that scroll sideways.
  const codeReport = () => {
    const blocks = [...document.querySelectorAll("div.highlight pre")]
        .filter((pre) => !pre.closest(".cell_output, .output"));
    // Columns are measured in a box at the top level of the page: lists and admonitions
    // indent theirs (code there is kept shorter).
    const topLevel = blocks.filter((pre) => !pre.closest("li, .admonition, details"));
    let columns = null;
    if (topLevel.length) {
      const pre = topLevel[0];
      const probe = document.createElement("span");
      probe.textContent = "x".repeat(100);
      pre.appendChild(probe);
      const charWidth = probe.getBoundingClientRect().width / 100;
      probe.remove();
      const style = getComputedStyle(pre);
      const inner = pre.clientWidth - parseFloat(style.paddingLeft)
          - parseFloat(style.paddingRight);
      columns = Math.floor(inner / charWidth);
    }
    const longest = (pre) => pre.textContent.split("\n")
        .reduce((a, b) => (b.length > a.length ? b : a), "");
    return {
      blocks: blocks.length,
      columns: columns,
      scrolling: blocks.filter((pre) => pre.scrollWidth > pre.clientWidth + 1)
          .map((pre) => longest(pre).trim().slice(0, 100)),
    };
  };
  // Characters drawn as a missing-glyph box: each non-ASCII character of the text
  // (and of buttons' ::before content) is drawn on a canvas in its element's font and
  // compared with a code point no font has (U+10FFFD); equal pixels mean no glyph.
  // Also reports web fonts that failed to load.
  const glyphReport = async () => {
    await document.fonts.ready;
    const canvas = document.createElement("canvas");
    canvas.width = 64;
    canvas.height = 64;
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    const pixels = (text, font) => {
      ctx.clearRect(0, 0, 64, 64);
      ctx.font = font;
      ctx.textBaseline = "top";
      ctx.fillText(text, 8, 8);
      return ctx.getImageData(0, 0, 64, 64).data.join(",");
    };
    const seen = new Map();
    const note = (text, style, where) => {
      const font = `${style.fontStyle} ${style.fontWeight} 32px ${style.fontFamily}`;
      for (const ch of text) {
        if (ch.codePointAt(0) < 0x80 || /\s|\p{M}|\p{Cf}/u.test(ch)) continue;
        const key = ch + "|" + font;
        if (!seen.has(key)) seen.set(key, {ch, font, where});
      }
    };
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (!el || el.closest("script, style, mjx-container, .mermaid svg")) continue;
      if (!el.getClientRects().length) continue;
      note(node.textContent, getComputedStyle(el), el.tagName.toLowerCase());
    }
    for (const el of document.querySelectorAll("button, a, .headerlink")) {
      const before = getComputedStyle(el, "::before");
      const content = before.content;
      if (content && content !== "none" && content !== "normal") {
        note(content.replace(/^"|"$/g, ""), before, el.className + "::before");
      }
    }
    const missing = [];
    const blanks = new Map();
    for (const {ch, font, where} of seen.values()) {
      if (!blanks.has(font)) blanks.set(font, pixels("\u{10FFFD}", font));
      if (pixels(ch, font) === blanks.get(font)) {
        missing.push(`U+${ch.codePointAt(0).toString(16).toUpperCase()} in ${where}`);
      }
    }
    const failedFonts = [...document.fonts]
        .filter((face) => face.status === "error").map((face) => face.family);
    return {checked: seen.size, missing: missing.slice(0, 20), failedFonts};
  };
  const skip =
      "script, style, pre, code, textarea, mjx-container, .highlight, .mermaid";
  const rawTex = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest(skip)) continue;
    const match = node.textContent.match(/\\\(|\\\[|\$\$|\\begin\{/);
    if (match) rawTex.push(node.textContent.trim().slice(0, 80));
  }
  const math = [...document.querySelectorAll(".math")];
  return {
    diagrams: diagrams().length,
    svgs: diagrams().filter(rendered).length,
    svgText: diagrams().map((el) => el.textContent).join(" | "),
    math: math.length,
    typeset: math.filter((el) => el.querySelector("mjx-container")).length,
    texErrors: document.querySelectorAll("mjx-merror").length,
    rawTex: rawTex,
    code: codeReport(),
    glyphs: await glyphReport(),
  };
})()
"""

# Runs on the probe page: are dropdown bodies hidden until their toggle is clicked?
DROPDOWN_REPORT_JS = r"""
(async () => {
  const boxes = [...document.querySelectorAll(".admonition.dropdown")];
  const hidden = (box) => [...box.children]
      .filter((child) => !child.matches(".admonition-title, .toggle-button"))
      .every((child) => getComputedStyle(child).visibility === "hidden"
                        || child.getClientRects().length === 0);
  const hiddenBefore = boxes.filter(hidden).length;
  for (const box of boxes) {
    const toggle = box.querySelector(".toggle-button");
    (toggle || box.querySelector(".admonition-title")).click();
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  return {
    dropdowns: boxes.length,
    hiddenBefore: hiddenBefore,
    hiddenAfter: boxes.filter(hidden).length,
    exercises: [...document.querySelectorAll(".exercise")]
        .map((el) => el.textContent.replace(/\s+/g, " ").trim()),
  };
})()
"""


@dataclass
class PageReport:
    """What the browser found on one page of the site."""

    page: str
    diagrams: int
    svgs: int
    svg_text: str
    math: int
    typeset: int
    tex_errors: int
    raw_tex: list[str]
    glyphs_checked: int
    missing_glyphs: list[str]
    failed_fonts: list[str]
    code_blocks: int
    code_columns: int | None
    scrolling_code: list[str]
    events: PageEvents


@dataclass
class BrowserRun:
    """Every page's report, the network probe's outcome, the probe page's dropdown
    report (``None`` for a site built elsewhere, which has no probe page) and the
    screenshots taken."""

    reports: dict[str, PageReport]
    probe_outcome: str
    probe_events: PageEvents
    dropdowns: dict[str, object] | None
    screenshots: list[Path]


def require(condition: bool, reason: str) -> None:
    """Skip (or fail, under ``CROSSALIGN_REQUIRE_BROWSER=1``) when ``condition`` does
    not hold."""
    if not condition:
        if REQUIRE_BROWSER:
            pytest.fail(reason)
        pytest.skip(reason)


def prepare_source(source: Path) -> None:
    """Lay out a copy of the book in ``source``: execution off, the probe page added to
    the toc.

    The copy is symlinks to the repository except the two configuration files and
    ``book/``, which gets the probe page beside links to every chapter.
    """
    source.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in {
            ".git",
            ".venv",
            "_build",
            "_config.yml",
            "_toc.yml",
            "book",
        }:
            (source / entry.name).symlink_to(entry)
    (source / "book").mkdir()
    for entry in (ROOT / "book").iterdir():
        (source / "book" / entry.name).symlink_to(entry)
    (source / "book" / f"{PROBE_NAME}.md").write_text(PROBE_SOURCE, encoding="utf-8")

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (source / "_config.yml").write_text(
        yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
    )

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = (
        toc["parts"][-1].setdefault("chapters", [])
        if "parts" in toc
        else toc.setdefault("chapters", [])
    )
    entries.append({"file": f"book/{PROBE_NAME}"})
    (source / "_toc.yml").write_text(
        yaml.safe_dump(toc, sort_keys=False), encoding="utf-8"
    )


def build_site(workdir: Path) -> Path:
    """Build the HTML site from committed notebook outputs with warnings as errors;
    return it."""
    source = workdir / "source"
    prepare_source(source)
    # fmt: skip
    command = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build",
        str(source),
        "--builder",
        "html",
        "--warningiserror",
        "--keep-going",
        "--path-output",
        str(workdir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"the book build failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )
    return workdir / "_build" / "html"


class QuietSiteHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site's files, with the JavaScript module type browsers insist on,
    silently."""

    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
    }

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site: ``CROSSALIGN_SITE`` if set, else a fresh no-execution build."""
    require(
        VENDOR_STAMP.is_file(),
        "web assets missing: run python tools/fetch_web_assets.py (make assets)",
    )
    given = os.environ.get("CROSSALIGN_SITE")
    if given:
        path = Path(given).resolve()
        if not (path / "index.html").is_file():
            pytest.fail(f"CROSSALIGN_SITE={given} holds no built site (no index.html)")
        return path
    return build_site(tmp_path_factory.mktemp("site"))


def redirect_target(site: Path, page: str) -> str | None:
    """Where ``page`` sends the browser at once (a ``<meta http-equiv="Refresh">``
    page), if anywhere."""
    match = REFRESH.search((site / page).read_text(encoding="utf-8"))
    return (
        None
        if match is None
        else (Path(page).parent / match.group(1)).as_posix().removeprefix("./")
    )


def site_pages(site: Path) -> list[str]:
    """Every content page of ``site``, relative to it (assets, sources and redirects
    left out)."""
    skipped = ("_static/", "_sources/", "_images/", "_downloads/")
    pages = [path.relative_to(site).as_posix() for path in site.rglob("*.html")]
    return sorted(
        page
        for page in pages
        if not page.startswith(skipped) and redirect_target(site, page) is None
    )


def visit(browser: HeadlessChromium, base: str, page: str) -> PageReport:
    """Open ``page`` and collect its render report and recorded events."""
    browser.open(f"{base}/{page}")
    report = browser.evaluate(RENDER_REPORT_JS)
    return PageReport(
        page=page,
        diagrams=report["diagrams"],
        svgs=report["svgs"],
        svg_text=report["svgText"],
        math=report["math"],
        typeset=report["typeset"],
        tex_errors=report["texErrors"],
        raw_tex=report["rawTex"],
        glyphs_checked=report["glyphs"]["checked"],
        missing_glyphs=report["glyphs"]["missing"],
        failed_fonts=report["glyphs"]["failedFonts"],
        code_blocks=report["code"]["blocks"],
        code_columns=report["code"]["columns"],
        scrolling_code=report["code"]["scrolling"],
        events=browser.events(),
    )


def take_screenshots(
    browser: HeadlessChromium, base: str, pages: list[str], landing: str
) -> list[Path]:
    """Save the landing page and chapter 4's first diagram (when the chapter exists) as
    PNGs."""
    views = [(landing, "landing.png", None)]
    if CHAPTER_4 in pages:
        views.append(
            (
                CHAPTER_4,
                "04_alignment_pipeline.png",
                "document.querySelector('.mermaid')?.scrollIntoView({block: 'center'})",
            )
        )
    saved = []
    for page, name, arrange in views:
        browser.open(f"{base}/{page}")
        browser.evaluate(RENDER_REPORT_JS)  # waits until diagrams and math are drawn
        if arrange:
            browser.evaluate(arrange)
        browser.screenshot(SCREENSHOT_DIR / name)
        saved.append(SCREENSHOT_DIR / name)
    return saved


@pytest.fixture(scope="module")
def browser_run(site: Path, request) -> BrowserRun:
    """Serve ``site`` on loopback, open every page in walled-off Chromium, take
    screenshots."""
    chromium = find_chromium()
    require(
        chromium is not None,
        "Chromium not installed (Debian: apt-get install chromium)",
    )
    handler = functools.partial(QuietSiteHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    landing = redirect_target(site, "index.html") or "index.html"
    try:
        with HeadlessChromium(chromium) as browser:
            reports = {page: visit(browser, base, page) for page in site_pages(site)}
            assert landing in reports, (
                f"index.html leads to {landing}, which is not a page of the site"
            )
            screenshots = take_screenshots(browser, base, list(reports), landing)

            dropdowns = None
            if PROBE_PAGE in reports:
                browser.open(f"{base}/{PROBE_PAGE}")
                dropdowns = browser.evaluate(DROPDOWN_REPORT_JS)

            browser.open(f"{base}/{landing}")
            outcome = browser.evaluate(
                f"fetch({NETWORK_PROBE_URL!r}).then(() => 'reached', () => 'blocked')"
            )
            probe_events = browser.events()
    finally:
        server.shutdown()
        server.server_close()
    run = BrowserRun(reports, outcome, probe_events, dropdowns, screenshots)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(summary_lines(run)), flush=True)
    return run


def summary_lines(run: BrowserRun) -> list[str]:
    """What the check saw, one line per count, for the terminal."""
    reports = run.reports.values()
    return [
        "",
        "browser check (headless Chromium, network limited to 127.0.0.1)",
        f"  pages visited                {len(run.reports)}",
        f"  Mermaid diagrams rendered    {sum(r.svgs for r in reports)} of "
        f"{sum(r.diagrams for r in reports)}",
        f"  code blocks scrolling        "
        f"{sum(len(r.scrolling_code) for r in reports)} of "
        f"{sum(r.code_blocks for r in reports)}; columns that fit "
        f"{min((r.code_columns for r in reports if r.code_columns), default=None)}",
        f"  characters without a glyph   "
        f"{sum(len(r.missing_glyphs) for r in reports)} of "
        f"{sum(r.glyphs_checked for r in reports)} checked",
        f"  math blocks typeset          {sum(r.typeset for r in reports)} of "
        f"{sum(r.math for r in reports)}",
        "  requests outside localhost   "
        f"{sum(len(r.events.outside_requests()) for r in reports)}",
        "  console errors, failed loads "
        f"{sum(len(r.events.errors) + len(r.events.failed) for r in reports)}",
        "  screenshots                  "
        f"{', '.join(str(p.relative_to(ROOT)) for p in run.screenshots)}",
    ]


def probe_report(browser_run: BrowserRun) -> PageReport:
    """The probe page's report; skips for a site built elsewhere (it has no probe
    page)."""
    if PROBE_PAGE not in browser_run.reports:
        pytest.skip("the probe page exists only in the site this test builds itself")
    return browser_run.reports[PROBE_PAGE]


def test_the_probe_page_renders_its_known_diagram_and_equations(browser_run):
    probe = probe_report(browser_run)
    assert probe.diagrams == 1 and probe.svgs == 1
    for label in PROBE_LABELS:
        assert label in probe.svg_text
    assert probe.math == PROBE_MATH_ELEMENTS
    assert probe.typeset == PROBE_MATH_ELEMENTS


def test_the_probe_exercise_renders_and_its_solution_stays_hidden_until_clicked(
    browser_run,
):
    probe_report(browser_run)
    report = browser_run.dropdowns
    assert report["dropdowns"] == 1
    assert report["hiddenBefore"] == 1 and report["hiddenAfter"] == 0
    assert len(report["exercises"]) == 1 and "Probe exercise" in report["exercises"][0]


def test_every_mermaid_block_became_an_svg(browser_run):
    failed = {
        page: f"{r.svgs} of {r.diagrams}"
        for page, r in browser_run.reports.items()
        if r.svgs != r.diagrams
    }
    assert not failed, f"diagrams not rendered: {failed}"


def test_all_math_typeset_without_errors_or_raw_tex(browser_run):
    for page, report in browser_run.reports.items():
        assert report.typeset == report.math, (
            f"{page}: {report.typeset} of {report.math} math blocks typeset"
        )
        assert report.tex_errors == 0, f"{page}: {report.tex_errors} TeX errors"
        assert report.raw_tex == [], (
            f"{page}: raw TeX left in the text: {report.raw_tex}"
        )


def test_no_request_leaves_localhost(browser_run):
    outside = {
        page: r.events.outside_requests()
        for page, r in browser_run.reports.items()
        if r.events.outside_requests()
    }
    assert not outside, f"pages fetched from the network: {outside}"


def configured_line_length() -> int:
    """``line-length`` of the ``[tool.ruff]`` table in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"^\[tool\.ruff\]\s*\nline-length = (\d+)$", text, re.MULTILINE)
    assert match, "pyproject.toml: [tool.ruff] must start with line-length = N"
    return int(match.group(1))


def test_no_chapter_code_block_scrolls_sideways(browser_run):
    """Code is formatted to pyproject.toml's line length; at the test window's width
    (1280 pixels) a code box must hold that many columns, so no block scrolls."""
    line_length = configured_line_length()
    chapters = {
        page: report
        for page, report in browser_run.reports.items()
        if page.startswith("book/") and report.code_blocks
    }
    assert chapters, "no page with code blocks was visited"
    narrow = {
        page: r.code_columns
        for page, r in chapters.items()
        if r.code_columns is not None and r.code_columns < line_length
    }
    assert not narrow, f"code boxes narrower than {line_length} columns: {narrow}"
    scrolling = {
        page: r.scrolling_code for page, r in chapters.items() if r.scrolling_code
    }
    assert not scrolling, (
        f"code blocks that scroll sideways (longest line): {scrolling}"
    )


def test_no_missing_glyph_boxes_or_failed_font_loads(browser_run):
    reports = browser_run.reports
    assert sum(r.glyphs_checked for r in reports.values()) > 0
    missing = {
        page: r.missing_glyphs for page, r in reports.items() if r.missing_glyphs
    }
    assert not missing, f"characters drawn as missing-glyph boxes: {missing}"
    failed = {page: r.failed_fonts for page, r in reports.items() if r.failed_fonts}
    assert not failed, f"web fonts that failed to load: {failed}"


def test_no_console_errors_or_failed_loads(browser_run):
    errors = {
        page: r.events.errors + r.events.failed
        for page, r in browser_run.reports.items()
        if r.events.errors or r.events.failed
    }
    assert not errors, f"errors reported by pages: {errors}"


def test_the_network_wall_holds_and_outside_requests_are_counted(browser_run):
    assert browser_run.probe_outcome == "blocked"
    assert NETWORK_PROBE_URL in browser_run.probe_events.outside_requests()


def test_screenshots_saved(browser_run):
    names = [path.name for path in browser_run.screenshots]
    assert "landing.png" in names
    assert ("04_alignment_pipeline.png" in names) == (CHAPTER_4 in browser_run.reports)
    for path in browser_run.screenshots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaves_localhost_classifies_urls():
    assert not leaves_localhost("http://127.0.0.1:8000/book/x.html")
    assert not leaves_localhost("http://localhost/x")
    assert not leaves_localhost("data:image/png;base64,AAAA")
    assert leaves_localhost("https://example.org/mathjax.js")
    assert leaves_localhost("wss://example.org/socket")


def notebook_pages(site: Path) -> list[Path]:
    """The built pages whose source is a notebook (they are the ones with launch
    buttons)."""
    return sorted(
        site / "book" / f"{path.stem}.html"
        for path in (ROOT / "book").glob("*.ipynb")
        if (site / "book" / f"{path.stem}.html").is_file()
    )


def test_every_notebook_page_has_a_colab_launch_button(site):
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repository = (
        config["repository"]["url"].removeprefix("https://github.com/").rstrip("/")
    )
    pages = notebook_pages(site)
    assert pages, "no notebook page was built"
    for page in pages:
        expected = f"https://colab.research.google.com/github/{repository}/blob/{config['repository']['branch']}/book/{page.stem}.ipynb"
        assert expected in page.read_text(encoding="utf-8"), (
            f"{page.name}: no Colab button linking {expected}"
        )


def test_pages_load_only_the_intended_vendor_scripts(site):
    """Only MathJax's entry file is a script tag; Mermaid comes from one module import,
    no CDN."""
    for page in site_pages(site):
        html = (site / page).read_text(encoding="utf-8")
        tags = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", html)
        vendor = [src for src in tags if "vendor/" in src]
        assert all("vendor/mathjax/tex-mml-chtml.js" in src for src in vendor), (
            f"{page}: {vendor}"
        )
        assert not [src for src in tags if leaves_localhost(src)], (
            f"{page}: scripts from the network"
        )
        if 'class="mermaid"' in html:
            assert re.search(
                r"import mermaid from "
                r"\"[./]*_static/vendor/mermaid/mermaid\.esm\.min\.mjs\"",
                html,
            ), page
