"""The committed rendered notebooks read cleanly: no stderr boxes, no column of only NaN."""

import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
RENDERED = sorted((REPO / "results" / "notebooks").glob("*/*.ipynb")) + [
    REPO / "results" / "report.ipynb"]


class _Tables(HTMLParser):
    """The body rows of every ``<table>`` in an HTML fragment, as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._in_body = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[-1].append([])
        elif tag == "td" and self._in_body:
            self._in_cell = True
            self.tables[-1][-1].append("")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.tables[-1][-1][-1] += data.strip()


def nan_only_columns(html: str) -> list[int]:
    """Indexes of data columns whose every body cell is NaN, None or empty, over all tables."""
    parser = _Tables()
    parser.feed(html)
    found = []
    for rows in parser.tables:
        rows = [row for row in rows if row]
        if not rows:
            continue
        for col in range(max(len(row) for row in rows)):
            cells = [row[col] for row in rows if col < len(row)]
            if cells and all(cell in ("NaN", "nan", "None", "") for cell in cells):
                found.append(col)
    return found


def test_the_parser_finds_a_nan_only_column():
    html = ("<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody>"
            "<tr><th>r1</th><td>1.0</td><td>NaN</td></tr>"
            "<tr><th>r2</th><td>NaN</td><td>NaN</td></tr></tbody></table>")
    assert nan_only_columns(html) == [1]


@pytest.mark.parametrize("path", RENDERED, ids=[p.parent.name or p.name for p in RENDERED])
def test_rendered_notebook_has_no_stderr_and_no_nan_only_column(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                assert output.name != "stderr", (
                    f"{path.name} cell {i} prints to stderr: {output.text[:120]!r}")
            html = output.get("data", {}).get("text/html", "")
            if "<table" in html:
                assert not nan_only_columns(html), (
                    f"{path.name} cell {i}: a table column holds only NaN")


PIPE_ROW = re.compile(r"^\s*\|.*\|\s*$", re.MULTILINE)


def pipe_tables_as_text(html: str) -> list[str]:
    """Markdown pipe-table rows that reached the page as preformatted text (a printed table)
    rather than as an HTML table."""
    return [row.strip() for block in re.findall(r"<pre>(.*?)</pre>", html, re.DOTALL)
            for row in PIPE_ROW.findall(block)]


def test_the_checks_find_a_printed_pipe_table_and_a_none_column():
    assert pipe_tables_as_text("<pre>| a | b |\n|---|---|\n| 1 | 2 |</pre>") == [
        "| a | b |", "|---|---|", "| 1 | 2 |"]
    assert nan_only_columns("<table><tbody><tr><td>1</td><td>None</td></tr></tbody></table>") \
        == [1]


def test_the_committed_report_reads_as_a_report():
    """results/report.html: no code cells, every table an HTML table (no Markdown printed as
    text), no column empty in every row."""
    html = (REPO / "results" / "report.html").read_text()
    assert "hl-ipython3" not in html, "code cells are shown"  # nbconvert's highlighted source
    assert not pipe_tables_as_text(html), "a Markdown table is printed as text"
    assert not nan_only_columns(html), "a table column is empty in every row"
    assert html.count("<table") >= 5, "the leaderboard and conclusions should be tables"


def test_dvc_plots_are_committed_images_that_render_offline(tmp_path):
    """`dvc plots show` used to render blank without network (its charting library comes
    from a CDN) and wrote an un-ignored dvc_plots/: the plots are now the report's images."""
    import shutil
    import subprocess
    import sys

    import yaml

    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert plots and all(isinstance(p, str) and p.endswith(".png") for p in plots), plots
    for path in plots:
        assert (REPO / path).stat().st_size > 10_000, path
    assert "dvc_plots/" in (REPO / ".gitignore").read_text().splitlines()
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    out = tmp_path / "plots"
    subprocess.run([dvc, "plots", "show", "-o", str(out)], cwd=REPO, check=True,
                   capture_output=True)
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert page.count("<img") == len(plots)
