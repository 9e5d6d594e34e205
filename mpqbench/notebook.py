"""The one runner every notebook stage uses: papermill execution, clean metadata, HTML, checks.

Sources are jupytext ``py:percent`` files (or ``.ipynb``); the executed notebook and its HTML go
to ``out_dir``. On failure the executed notebook is left there for reading and the runner exits
non-zero.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import nbformat

from mpqbench.errors import MpqbenchError
from mpqbench.results import load_runs
from mpqbench.runtime import PROGRESS_FILE_ENV

VOLATILE_NOTEBOOK_KEYS = ("start_time", "end_time", "duration", "exception")
VOLATILE_CELL_KEYS = ("start_time", "end_time", "duration", "exception", "status")


def read_source(source: str | Path) -> nbformat.NotebookNode:
    """A notebook from a jupytext ``.py`` file or an ``.ipynb``, outputs stripped."""
    source = Path(source)
    if not source.is_file():
        raise MpqbenchError(f"notebook source {source} not found")
    if source.suffix == ".py":
        import jupytext

        nb = jupytext.read(source)
    else:
        nb = nbformat.read(source, as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise MpqbenchError(f"{source} has no cell tagged 'parameters'")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python",
    }
    return nb


def strip_volatile(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop papermill's timestamps and durations so that reruns differ only in real outputs."""
    pm = nb.metadata.get("papermill", {})
    for key in VOLATILE_NOTEBOOK_KEYS:
        pm.pop(key, None)
    pm.pop("input_path", None)
    pm.pop("output_path", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell_pm = cell.metadata.get("papermill", {})
        for key in VOLATILE_CELL_KEYS:
            cell_pm.pop(key, None)
        if not cell_pm:
            cell.metadata.pop("papermill", None)
    return nb


def render_html(nb: nbformat.NotebookNode, path: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")


def _relay_progress(log: Path, name: str, stop: threading.Event, every_s: float = 1.0) -> None:
    """Copy the kernel's progress bars from ``log`` to this process's stderr, line by line,
    each prefixed with the notebook's name, until ``stop`` is set (then once more)."""
    with log.open() as f:
        while True:
            finished = stop.wait(every_s)
            text = f.read()
            for line in text.replace("\r", "\n").splitlines():
                if line.strip():
                    print(f"[{name}] {line.strip()}", file=sys.stderr, flush=True)
            if finished:
                return


def run_notebook(
    source: str | Path,
    out_dir: str | Path,
    parameters: dict[str, Any],
    runs_dir: str | Path | None = None,
    cwd: str | Path = ".",
    kernel: str = "python3",
) -> Path:
    """Execute ``source`` with ``parameters`` into ``out_dir/<name>.ipynb`` and ``.html``.

    When ``runs_dir`` is given it is passed to the notebook as the ``runs_dir`` parameter and,
    after the run, must hold at least one valid RunRecord.
    """
    import papermill

    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # papermill does not, and DVC removed it
    name = source.stem
    output_path = out_dir / f"{name}.ipynb"
    parameters = dict(parameters)
    if runs_dir is not None:
        parameters["runs_dir"] = str(runs_dir)
    failure: Exception | None = None
    # the source copy and the progress log live outside out_dir: a killed run leaves nothing
    # there that DVC would hash
    with tempfile.TemporaryDirectory(prefix="mpqbench-notebook-") as scratch:
        input_path = Path(scratch) / f"{name}.source.ipynb"
        nbformat.write(read_source(source), input_path)
        log = Path(scratch) / "progress.log"
        log.touch()
        previous = os.environ.get(PROGRESS_FILE_ENV)
        os.environ[PROGRESS_FILE_ENV] = str(log)
        stop = threading.Event()
        relay = threading.Thread(target=_relay_progress, args=(log, name, stop), daemon=True)
        relay.start()
        try:
            papermill.execute_notebook(
                str(input_path), str(output_path), parameters=parameters, kernel_name=kernel,
                cwd=str(cwd), progress_bar=False, log_output=False,
            )
        except papermill.PapermillExecutionError as exc:
            failure = exc
        finally:
            stop.set()
            relay.join()
            if previous is None:
                os.environ.pop(PROGRESS_FILE_ENV, None)
            else:
                os.environ[PROGRESS_FILE_ENV] = previous
    nb = strip_volatile(nbformat.read(output_path, as_version=4))
    nbformat.write(nb, output_path)
    render_html(nb, out_dir / f"{name}.html")
    if failure is not None:
        raise MpqbenchError(
            f"notebook {source} failed: {failure.ename}: {failure.evalue}. "
            f"Read the executed notebook at {output_path}"
        )
    if runs_dir is not None:
        runs = load_runs(runs_dir) if Path(runs_dir).is_dir() else []
        if not runs:
            raise MpqbenchError(f"notebook {source} ran but wrote no RunRecord under {runs_dir}")
    return output_path
