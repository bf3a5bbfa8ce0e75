"""The project's pages hold together: every relative link and #anchor resolves, README's first screen says how
to run the package, it has a table of contents, and it names no commit and no test or CI wall time.

Anchors are computed as GitHub computes them for a heading: the rendered text (code spans keep their content,
emphasis and link syntax go), lower-cased, every character dropped that is not a letter, a mark, a decimal or
letter number, a connector (``_``), a hyphen or a space, then each space made a hyphen; a repeated heading gets
``-1``, ``-2``, ... Links inside code (fenced blocks, code spans) are not links and are not read.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The pages whose links are checked: the front page, the contributors' page, docs/, and the other guides a
#: reader reaches from them (the study reports under experiments/*/results/ are generated and left out).
PAGES = sorted(
    {"README.md", "CONTRIBUTING.md", "recipes/README.md", "verl_dgpo/local/README.md",
     "experiments/method_comparison/README.md"}
    | {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")}
)  # fmt: skip

#: README's two set-up commands, exactly as a user copies them.
INSTALL_AND_RUN = (
    'pip install torch==2.13.0 && pip install -e ".[test]" && python -m verl_dgpo.main --config-name local_cpu'
)
TEST_COMMAND = "python -m pytest -q tests"
FIRST_SCREEN_LINES = 40

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)", re.M)
_HTML_TARGET = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
_HTML_ANCHOR = re.compile(r"""<a\b[^>]*?\b(?:name|id)\s*=\s*["']([^"']+)["']""", re.I)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L(\d+))?$")


def _code_free_lines(text: str) -> list[str]:
    """The page's lines with fenced code blocks blanked (so a ``# comment`` in bash is not a heading)."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def _rendered_text(markdown: str) -> str:
    """A heading's text as GitHub renders it: code spans keep their content, link and emphasis syntax goes."""
    spans: list[str] = []

    def keep(m: re.Match) -> str:
        spans.append(m.group(2).strip() if m.group(2).strip() else m.group(2))
        return f"\x00{len(spans) - 1}\x00"

    text = _CODE_SPAN.sub(keep, markdown)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*{1,3}|(?<!\w)_{1,3}|_{1,3}(?!\w))", "", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text).strip()


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading whose markdown text is ``heading`` (before de-duplication)."""
    kept = []
    for ch in _rendered_text(heading).lower():
        cat = unicodedata.category(ch)
        if ch in "- " or cat[0] in "LM" or cat in ("Nd", "Nl", "Pc"):
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """``(level, markdown text)`` of every heading outside code, in order."""
    lines = _code_free_lines(text)
    found = []
    for i, line in enumerate(lines):
        m = _ATX.match(line)
        if m:
            found.append((len(m.group(1)), (m.group(2) or "").strip()))
            continue
        s = _SETEXT.match(line)
        if s and i > 0 and lines[i - 1].strip() and not _ATX.match(lines[i - 1]) and not lines[i - 1].lstrip().startswith(("|", "-", "*", ">")):
            found.append((1 if s.group(1)[0] == "=" else 2, lines[i - 1].strip()))
    return found


def anchors(text: str) -> set[str]:
    """Every anchor a page has: its headings' slugs, de-duplicated as GitHub does, and explicit HTML anchors."""
    seen: dict[str, int] = {}
    out = set()
    for _, heading in headings(text):
        slug = github_slug(heading)
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        out.add(slug)
    out.update(_HTML_ANCHOR.findall(text))
    return out


def link_targets(text: str) -> list[tuple[int, str]]:
    """``(line number, target)`` of every link, image, reference definition and HTML href/src outside code."""
    found = []
    for number, line in enumerate(_code_free_lines(text), start=1):
        line = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        found += [(number, m.group(2).strip("<>")) for m in _LINK.finditer(line)]
        found += [(number, t) for t in _REF_DEF.findall(line)]
        found += [(number, t) for t in _HTML_TARGET.findall(line)]
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One line per link of ``page`` that does not resolve within ``root``: a missing file or folder, a path
    outside the repository, a missing #anchor of a markdown page, or a line anchor past a file's end."""
    text = page.read_text(encoding="utf-8")
    problems = []
    for number, target in link_targets(text):
        if not target or _SCHEME.match(target) or target.startswith("//"):
            continue
        path_part, _, anchor = target.partition("#")
        path_part, anchor = unquote(path_part), unquote(anchor)
        where = f"{page.relative_to(root)}:{number}: {target}"
        if path_part:
            dest = (root / path_part.lstrip("/")) if path_part.startswith("/") else (page.parent / path_part)
            dest = dest.resolve()
            if root.resolve() not in (dest, *dest.parents):
                problems.append(f"{where} (outside the repository)")
                continue
            if not dest.exists():
                problems.append(f"{where} (no such file or folder)")
                continue
        else:
            dest = page
        if not anchor:
            continue
        if dest.is_dir():
            problems.append(f"{where} (an anchor on a folder)")
        elif dest.suffix.lower() in (".md", ".markdown"):
            if anchor not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where} (no heading makes #{anchor})")
        else:
            m = _LINE_ANCHOR.match(anchor)
            n_lines = len(dest.read_text(encoding="utf-8", errors="replace").splitlines())
            if not m or int(m.group(2) or m.group(1)) > n_lines:
                problems.append(f"{where} (#{anchor} is no line of a {n_lines}-line file)")
    return problems


# ---- the checker itself: anchors computed by hand from GitHub's rule, and links it must refuse ----------------


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Two trainers: v0 (the preset's default) and v1 (`trainer.use_v1=true`)",
         "two-trainers-v0-the-presets-default-and-v1-traineruse_v1true"),
        ("6. Toy reproduction of the whole chain on CPU", "6-toy-reproduction-of-the-whole-chain-on-cpu"),
        ("TOY=1: the recipe's own trainer on a CPU", "toy1-the-recipes-own-trainer-on-a-cpu"),
        ("Weights on ∇π — per **method**", "weights-on-π--per-method"),
        ("[Set-up](#x): the two commands", "set-up-the-two-commands"),
        ("The stress study (pre-registered)", "the-stress-study-pre-registered"),
    ],
)  # fmt: skip
def test_slug_is_githubs_anchor_for_the_heading(heading, anchor):
    assert github_slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors_and_code_blocks_make_none():
    text = "# Notes\n\n## Setup\n\n```bash\n# Setup\n```\n\n## Setup\n\nTitle\n-----\n"
    assert anchors(text) == {"notes", "setup", "setup-1", "title"}


def test_a_deliberately_broken_link_is_reported_and_a_good_one_is_not(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Two words\n", encoding="utf-8")
    (tmp_path / "code.py").write_text("a = 1\nb = 2\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Front\n\n## Here\n\n"
        "[ok](docs/guide.md#two-words) [ok](#here) [ok](code.py#L2) [ok](docs/) [ok](https://example.org/x#y)\n"
        "`[not a link](nowhere.md)`\n\n```\n[not a link](nowhere.md)\n```\n"
        "[gone](docs/missing.md) [bad anchor](docs/guide.md#two-word) [own](#there) [line](code.py#L3)\n"
        "![figure](figures/none.png) [out](../elsewhere.md)\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "docs/missing.md", "docs/guide.md#two-word", "#there", "code.py#L3", "figures/none.png", "../elsewhere.md",
    ]  # fmt: skip


# ---- the project's own pages ------------------------------------------------------------------------------


def test_the_checked_pages_exist():
    missing = [p for p in PAGES if not (ROOT / p).is_file()]
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(ROOT / page) == []


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_gives_both_set_up_commands_on_its_first_screen():
    first_screen = "\n".join(_readme().splitlines()[:FIRST_SCREEN_LINES])
    assert INSTALL_AND_RUN in first_screen
    assert re.search(rf"^{re.escape(TEST_COMMAND)}$", first_screen, re.M), "the test command, on a line of its own"


def test_readme_shows_the_weight_figure_on_its_first_screen():
    first_screen = "\n".join(_readme().splitlines()[:FIRST_SCREEN_LINES])
    assert "](figures/weights.png)" in first_screen


def test_readme_has_a_table_of_contents_listing_every_section_after_it():
    text = _readme()
    lines = _code_free_lines(text)
    level2 = [(i, github_slug(m.group(2) or "")) for i, m in ((i, _ATX.match(l)) for i, l in enumerate(lines)) if m and len(m.group(1)) == 2]
    contents = [k for k, (_, slug) in enumerate(level2) if slug in ("contents", "table-of-contents")]
    assert len(contents) == 1, "one '## Contents' heading"
    start = level2[contents[0]][0]
    end = next((i for i in range(start + 1, len(lines)) if _ATX.match(lines[i])), len(lines))
    listed = [t[1:] for _, t in link_targets("\n".join(lines[start + 1 : end])) if t.startswith("#")]
    sections = [slug for _, slug in level2[contents[0] + 1 :]]
    assert sections, "sections after the contents"
    assert [a for a in listed if a in sections] == sections, "every '##' section after the contents, in order"
    assert set(listed) <= anchors(text)


#: A commit hash as git abbreviates it (7 to 40 hex digits, at least one of them a digit, so words such as
#: "defaced" are not hashes).
_COMMIT = re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![0-9A-Za-z])")


def test_readme_names_no_commit():
    assert _COMMIT.findall(_readme()) == []


def test_commit_pattern_finds_abbreviated_and_full_hashes_only():
    text = "runs of 7902a1f and 89ba2140c1d2e3f4a5b6c7d8e9f0011223344556; arXiv 2603.14389; defaced; torch==2.13.0"
    assert _COMMIT.findall(text) == ["7902a1f", "89ba2140c1d2e3f4a5b6c7d8e9f0011223344556"]


def test_readme_states_no_wall_time_of_a_test_or_ci_run():
    """Times of test and CI runs live in CONTRIBUTING.md, each next to its command; the front page links there."""
    duration = re.compile(r"\d+(?:\.\d+)?\s*(?:s|sec|seconds?|min|minutes?|h|hours?)\b")
    offending = [
        line for line in _readme().splitlines()
        if re.search(r"pytest|\.ci/run|\bCI\b|\btier\b", line) and duration.search(line)
    ]  # fmt: skip
    assert offending == []
    assert not re.search(r"\b\d+ (?:passed|failed|skipped)\b", _readme())


# ---- the studies' verdicts on the front page are the reports' own ------------------------------------------

_CLAIMS_ANCHOR = "the-papers-claims"


def _report_verdicts(report: Path) -> list[str]:
    """The verdict of each row of a study report's claims table, without a trailing parenthesis (the short
    study's reads "cannot tell at this scale (20 < 150 steps)": the front page copies no number)."""
    lines = report.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if _ATX.match(line) and github_slug(_ATX.match(line).group(2)) == _CLAIMS_ANCHOR)
    rows = []
    for line in lines[start + 1 :]:
        if _ATX.match(line):
            break
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    verdicts = [re.search(r"\*\*(.+?)\*\*", row[1]).group(1) for row in rows[1:]]  # rows[0]: the header
    return [re.sub(r"\s*\([^()]*\)$", "", v) for v in verdicts]


def test_readme_study_verdicts_are_the_reports_own():
    """Each README cell that links to a report's claims reads that report's verdict for the same claim (the
    claims in the reports' order, one README row each)."""
    rows = [line for line in _code_free_lines(_readme()) if f"report.md#{_CLAIMS_ANCHOR})" in line]
    assert rows, "README's table of the studies' verdicts"
    cells = 0
    for k, row in enumerate(rows):
        for m in _LINK.finditer(row):
            path, _, anchor = m.group(2).partition("#")
            if anchor != _CLAIMS_ANCHOR:
                continue
            verdicts = _report_verdicts(ROOT / path)
            assert len(verdicts) == len(rows), f"{path} judges {len(verdicts)} claims, README lists {len(rows)}"
            assert m.group(1) == verdicts[k], f"README row {k + 1}, {path}: {m.group(1)!r}, report: {verdicts[k]!r}"
            cells += 1
    assert cells >= 3 * len(rows)


# ---- paths and module names the pages give exist -----------------------------------------------------------

#: A file path of this checkout as the pages write it in code: under one of its top folders. One with a
#: placeholder (``recipes/run_<method>_<size>.sh``, ``$TOY_DIR``, a glob) is not checked.
_REPO_PATH = re.compile(r"(?<![\w./-])((?:verl_dgpo|tests|scripts|recipes|docs|examples|experiments|figures|\.ci)/[\w./<>*{}$-]*)")
#: Files that are gone and that a page names as gone (the experiment's README: the short study's runs were
#: made by "the former `scripts/compare_methods.py`").
FORMER_FILES = {"scripts/compare_methods.py"}
_MODULE = re.compile(r"(?<![\w./-])verl_dgpo(?:\.[A-Za-z_]\w*)+")


def _code_texts(text: str) -> list[str]:
    """The code of a page: its fenced blocks and its code spans."""
    blocks, fence, current = [], None, []
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence, current = m.group(1), []
        elif fence is not None and m and m.group(1)[0] == fence[0]:
            blocks.append("\n".join(current))
            fence = None
        elif fence is not None:
            current.append(line)
    prose = "\n".join(_code_free_lines(text))
    return blocks + [m.group(2) for m in _CODE_SPAN.finditer(prose)]


def _module_resolves(dotted: str) -> bool:
    """``verl_dgpo.a.b`` is a module or package of the checkout, or an attribute named in one's source."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            rest = parts[cut:]
            return len(rest) <= 1 and (not rest or re.search(rf"\b{re.escape(rest[0])}\b", source.read_text(encoding="utf-8")) is not None)
    return False


@pytest.mark.parametrize("page", PAGES)
def test_paths_and_modules_named_in_code_exist(page):
    """A path such as ``verl_dgpo/startup/preflight.py`` or a module such as ``verl_dgpo.registry`` in a page's
    code names something of this checkout (so a moved module cannot leave a page pointing at nothing)."""
    missing = []
    for code in _code_texts((ROOT / page).read_text(encoding="utf-8")):
        for path in _REPO_PATH.findall(code):
            path = path.rstrip(".")
            if re.search(r"[<>*{}$]", path) or path in FORMER_FILES:
                continue
            if not (ROOT / path).exists():
                missing.append(path)
        missing += [name for name in _MODULE.findall(code) if not _module_resolves(name)]
    assert missing == []


def test_module_check_tells_a_module_or_its_attribute_from_a_missing_one():
    assert _module_resolves("verl_dgpo.registry") and _module_resolves("verl_dgpo.config.DGPOPolicyLossConfig")
    assert not _module_resolves("verl_dgpo.no_such_module")
    assert not _module_resolves("verl_dgpo.config.NoSuchClass")
    assert not _module_resolves("verl_dgpo.registry.a.b")


def test_readme_names_exactly_the_tested_verl_releases():
    """The front page's list of tested releases is verl_dgpo/version.py's ``SUPPORTED_VERL``, read without
    importing the package."""
    import ast

    tree = ast.parse((ROOT / "verl_dgpo" / "version.py").read_text(encoding="utf-8"))
    supported = next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SUPPORTED_VERL"
    )  # fmt: skip
    text = _readme()
    section = text[text.index("## Supported verl releases") :]
    section = section[: section.index("\n## ", 1)]
    assert set(re.findall(r"\b\d+\.\d+\.\d+\b", section)) == set(supported)
    assert f"{supported[0]} to {supported[-1]}" in "\n".join(text.splitlines()[:FIRST_SCREEN_LINES])
