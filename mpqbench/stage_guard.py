"""A stage's committed outputs kept whole while the stage runs, and the stage's process tied to
the ``dvc repro`` that started it.

DVC removes a stage's outputs before its command runs, unless they are declared
``persist: true``. The expensive stages (the method notebooks, the policy bank, the grid's
allocations and cells) declare them so, and their command wraps its work in
``guarded_outputs``:

- the outputs are moved aside (a rename, under ``.set-aside/``), so the run starts from
  nothing, as it would under DVC's own removal;
- a run that fails, is interrupted or is killed by its parent's death puts them back, and
  keeps what it wrote under ``.set-aside/failed/`` for reading; a run that succeeds drops them;
- a run killed outright (``kill -9``) leaves them under ``.set-aside/``: the next run of the
  stage puts them back before anything else;
- a lock file per stage (``fcntl.flock``, released by the kernel when its holder dies) refuses
  a second run of the same stage while one is alive.

``watch_parent`` ends the process (and the notebook kernel it started) when the process that
started it dies: a killed ``dvc repro`` would otherwise leave it writing beside a new one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mpqbench.errors import MpqbenchError

SET_ASIDE = Path(".set-aside")


def _key(path: Path) -> str:
    return path.as_posix().strip("/").replace("/", "__")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _lock(name: str):
    """An exclusive lock on ``.set-aside/<name>.lock``; an error naming its holder if held."""
    SET_ASIDE.mkdir(exist_ok=True)
    handle = open(SET_ASIDE / f"{name}.lock", "a+")  # noqa: SIM115 (held for the run)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise MpqbenchError(
            f"another run of this stage (pid {holder}) is writing its outputs; wait for it to "
            f"end or stop it (kill {holder}), then run the stage again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


@contextmanager
def guarded_outputs(outputs: list[str | Path]) -> Iterator[None]:
    """Run the block with ``outputs`` moved aside; put them back unless it succeeds."""
    outputs = [Path(p) for p in outputs]
    name = _key(outputs[0])
    handle = _lock(name)
    aside = SET_ASIDE / name
    try:
        for path in outputs:  # a run killed outright left the committed copy here
            kept = aside / _key(path)
            if kept.exists():
                _remove(path)
                kept.rename(path)
        _remove(aside)
        aside.mkdir(parents=True)
        for path in outputs:
            if path.exists():
                path.rename(aside / _key(path))
        try:
            yield
        except BaseException as exc:
            failed = SET_ASIDE / "failed" / name
            _remove(failed)
            failed.mkdir(parents=True)
            for path in outputs:
                if path.exists():
                    path.rename(failed / _key(path))
                kept = aside / _key(path)
                if kept.exists():
                    kept.rename(path)
            _remove(aside)
            if isinstance(exc, MpqbenchError):
                raise MpqbenchError(
                    f"{exc} [the committed outputs are back in place; what this run wrote is "
                    f"in {failed}/]") from exc
            raise
        _remove(aside)
    finally:
        handle.close()


SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh"}


def _stat(pid: int) -> tuple[str, int] | None:
    """(command name, parent pid) of ``pid`` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 1:]
    return name, int(rest.split()[1])


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux /proc; none elsewhere)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        found = _stat(int(stat.parent.name))
        if found is not None:
            parents[int(stat.parent.name)] = found[1]
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _links() -> list[tuple[int, int]]:
    """(process, its parent) pairs whose break means the ``dvc repro`` above us died: this
    process and its parent, and, when that parent is a shell (DVC runs a command through
    ``$SHELL -c`` and a shell may stay in between), the shell and its own parent."""
    links = [(os.getpid(), os.getppid())]
    parent = _stat(os.getppid())
    if parent is not None and parent[0] in SHELLS:
        links.append((os.getppid(), parent[1]))
    return links


def watch_parent(every_s: float = 1.0) -> None:
    """End this process, and every process it started, once the process that started it has
    died.

    A daemon thread checks the links of ``_links`` every ``every_s``; when one breaks (the
    parent, or the shell between it and DVC, was re-parented) the descendants (a notebook
    kernel) are killed and SIGTERM is sent to this process, whose handler raises SystemExit in
    the main thread, so ``guarded_outputs`` puts the committed outputs back on the way out."""
    links = _links()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_exit)

    def intact() -> bool:
        return all((_stat(pid) or ("", -1))[1] == parent for pid, parent in links)

    def watch() -> None:
        while intact():
            time.sleep(every_s)
        for pid in _children(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
