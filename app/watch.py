"""`evergreen watch DIR`: ingest each batch dropped in a folder, then start a retrain.

A drop is a file or a sub-folder of DIR. It is complete when its marker appears
(DIR/<folder>/_READY, or DIR/<file>_READY beside a file; `watch.marker`) or when nothing in
it changed for `watch.quiet_seconds`. Complete drops are ingested under the workspace lock
and moved to DIR/.done/ (refused ones to DIR/.failed/ with the reason), so a restart never
takes them again. The retrain then runs here, or - with a Prefect server configured - the
served `continual-retraining` deployment runs from the `evergreen.batch.ingested` event.
Drops that land while a retrain runs wait for the lock and go into the next one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from evergreen.config import Config, WatchConfig, load_config
from evergreen.errors import BadInputError, EvergreenError, WorkspaceBusyError
from evergreen.workspace import Workspace, workspace_lock

log = logging.getLogger("evergreen.watch")
EVENT = "evergreen.batch.ingested"
DONE, FAILED = ".done", ".failed"


def resource_id(ws: Workspace) -> str:
    """The Prefect resource an ingest event is about: the workspace, by its path."""
    return f"evergreen.workspace.{ws.root}"


def signature(drop: Path) -> tuple:
    """(relative path, size, mtime) of every file in a drop: any write changes it."""
    try:
        if not drop.is_dir():
            st = drop.lstat()
            return ((drop.name, st.st_size, st.st_mtime_ns),)
        rows, stack = [], [str(drop)]
        while stack:  # not os.walk: it recurses, and a very deep drop would hit the limit
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        st = entry.stat(follow_symlinks=False)
                        rows.append((os.path.relpath(entry.path, drop), st.st_size, st.st_mtime_ns))
        return tuple(sorted(rows))
    except OSError:  # a file vanished mid-walk: the drop is still changing
        return (("<changing>", time.monotonic_ns()),)


@dataclass
class Pending:
    signature: tuple
    since: float  # clock time of the last change seen


class DropTracker:
    """Which drops in a folder are complete: marked, or unchanged for `quiet_s` seconds."""

    def __init__(self, folder: Path, marker: str, quiet_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.folder, self.marker, self.quiet_s, self.clock = folder, marker, quiet_s, clock
        self.pending: dict[str, Pending] = {}

    def drops(self) -> list[Path]:
        """Visible entries of the folder that are not markers (.done/.failed are hidden)."""
        return sorted(p for p in self.folder.iterdir()
                      if not p.name.startswith(".") and not p.name.endswith(self.marker))

    def marker_of(self, drop: Path) -> Path:
        return drop / self.marker if drop.is_dir() else drop.with_name(drop.name + self.marker)

    def touch(self, paths: Iterable[str]) -> None:
        """A change notification under a drop restarts its quiet period."""
        now = self.clock()
        for path in paths:
            try:
                name = Path(path).relative_to(self.folder).parts[0]
            except (ValueError, IndexError):
                continue
            if name in self.pending:
                self.pending[name].since = now

    def ready(self) -> list[Path]:
        """The complete drops; the others start or continue their quiet period."""
        now, ready, seen = self.clock(), [], set()
        for drop in self.drops():
            seen.add(drop.name)
            if self.marker_of(drop).exists():
                ready.append(drop)
                continue
            sig, known = signature(drop), self.pending.get(drop.name)
            if known is None or known.signature != sig:
                self.pending[drop.name] = Pending(sig, now)
            elif now - known.since >= self.quiet_s:
                ready.append(drop)
        for gone in set(self.pending) - seen:
            del self.pending[gone]
        return ready


@dataclass
class WatchSummary:
    """What the watcher did: drops landed, unchanged or refused; retrains; events sent."""

    landed: list[str] = field(default_factory=list)  # batch ids
    unchanged: list[str] = field(default_factory=list)  # drops with nothing new
    failed: list[str] = field(default_factory=list)  # drops moved to .failed/
    retrains: list[dict] = field(default_factory=list)
    retrain_errors: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # ids of emitted events


def shelve(folder: Path, drop: Path, where: str, reason: str | None = None) -> Path:
    """Move a processed drop to DIR/.done/ or DIR/.failed/ (stamped if the name is taken)."""
    target_dir = folder / where
    target_dir.mkdir(exist_ok=True)
    target = target_dir / drop.name
    if target.exists():
        target = target_dir / f"{drop.name}.{datetime.now(UTC):%Y%m%dT%H%M%S.%f}"
    try:
        drop.rename(target)
    except OSError as exc:
        raise EvergreenError(f"{drop}: cannot move it to {target_dir}: {exc.strerror}; "
                             "the watcher needs write access to the drop folder") from None
    if reason:
        (target_dir / f"{target.name}.reason.txt").write_text(reason + "\n")
    return target


def ingest_drop(ws: Workspace, cfg: Config, folder: Path, drop: Path, marker: str) -> dict | None:
    """Ingest one complete drop and shelve it; None when it was refused (quarantined)."""
    from evergreen import dvcfile
    from mains import call_main

    marked = drop / marker if drop.is_dir() else drop.with_name(drop.name + marker)
    marked.unlink(missing_ok=True)  # not a sample: a reader would take it for data
    try:
        result = call_main("ingest", ws, cfg, source=str(drop))
        if result["batch_id"]:
            dvcfile.track(ws.root, "data/batches")
    except BadInputError as exc:
        where = shelve(folder, drop, FAILED, str(exc))
        log.error("drop %s refused, moved to %s:\n%s", drop.name, where, exc)
        return None
    except Exception as exc:  # the watcher outlives one bad drop; the drop is kept
        where = shelve(folder, drop, FAILED, f"{type(exc).__name__}: {exc}")
        log.exception("drop %s failed, moved to %s", drop.name, where)
        return None
    shelve(folder, drop, DONE)
    if result["batch_id"]:
        log.info("drop %s: landed batch %s, %d new samples", drop.name, result["batch_id"],
                 result["added"])
    else:
        log.info("drop %s: nothing new (%d samples already in the dataset)", drop.name,
                 result["already_present"])
    return result


def retrain_here(ws: Workspace, overrides: list[str] | None = None) -> dict:
    """The continual-retraining flow in this process (the caller holds the workspace lock)."""
    from flows.retraining import continual_retraining

    return continual_retraining(str(ws.root), overrides=overrides)


def announce(ws: Workspace, landed: list[dict], data_version: str | None) -> list[str]:
    """Emit one `evergreen.batch.ingested` event per landed batch; wait until they are sent."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    ids = []
    for batch in landed:
        event = emit_event(EVENT, resource={"prefect.resource.id": resource_id(ws),
                                            "prefect.resource.name": ws.root.name},
                           payload={"workspace": str(ws.root), "batch_id": batch["batch_id"],
                                    "added": batch["added"], "source": batch["source"],
                                    "data_version": data_version})
        if event is None:
            raise EvergreenError(f"{EVENT}: Prefect did not take the event; check PREFECT_API_URL "
                                 "or set watch.retrain: local")
        ids.append(str(event.id))
    EventsWorker.drain_all(timeout=30, at_exit=False)
    return ids


def retrain_mode(setting: str) -> str:
    """auto -> event when a Prefect server is configured (PREFECT_API_URL), else local."""
    if setting == "local":
        return setting
    from prefect.settings import get_current_settings

    configured = bool(get_current_settings().api.url)
    if setting == "event" and not configured:  # the event would go to a throwaway server
        raise BadInputError("watch.retrain is 'event' but PREFECT_API_URL is not set: start a "
                            "server (`evergreen ui`), export PREFECT_API_URL and run "
                            "`evergreen serve`, or set watch.retrain: local")
    return "event" if configured else "local"


def run_cycle(ws: Workspace, folder: Path, drops: list[Path], wcfg: WatchConfig, mode: str,
              summary: WatchSummary, overrides: list[str] | None = None) -> None:
    """Ingest the complete drops under the lock, then retrain once for all that landed."""
    from evergreen import dvcfile

    cfg = load_config(ws.params, overrides)  # re-read: a params edit applies from the next drop on
    with workspace_lock(ws, f"evergreen watch {folder}", wcfg.lock_wait_seconds):
        dvcfile.init_workspace(ws)
        results = [ingest_drop(ws, cfg, folder, d, wcfg.marker) for d in drops]
        summary.failed += [d.name for d, r in zip(drops, results) if r is None]
        summary.unchanged += [d.name for d, r in zip(drops, results) if r and not r["batch_id"]]
        landed = [r for r in results if r and r["batch_id"]]
        summary.landed += [r["batch_id"] for r in landed]
        if landed and mode == "local":
            retrain_logged(ws, summary, overrides)
    if landed and mode == "event":
        summary.events += announce(ws, landed, dvcfile.data_version(ws.root))
        log.info("sent %s for %d batch(es): the continual-retraining deployment takes it from here",
                 EVENT, len(landed))


def retrain_logged(ws: Workspace, summary: WatchSummary, overrides: list[str] | None = None) -> None:
    """Retrain in-process; a failed retrain is logged and the watcher goes on."""
    log.info("retraining on the new data (continual-retraining, in this process)")
    try:
        result = retrain_here(ws, overrides)
    except Exception as exc:  # the next landed drop retrains on everything new
        summary.retrain_errors.append(f"{type(exc).__name__}: {exc}")
        log.error("retrain failed: %s", exc, exc_info=not isinstance(exc, EvergreenError))
        return
    summary.retrains.append(result)
    log.info("retrain done: %s", result["message"])


def check_folder(folder: Path, ws: Workspace) -> Path:
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise BadInputError(f"watch {folder}: no such folder (create the drop folder first)")
    if ws.root.is_relative_to(folder):  # its params.yaml, data/, models/ would be taken for drops
        raise BadInputError(f"watch {folder}: holds the workspace {ws.root}; use a folder of "
                            "its own for drops")
    for guarded in (ws.root / "data", ws.root / "models"):
        if folder.is_relative_to(guarded):
            raise BadInputError(f"watch {folder}: the drop folder lies inside the workspace's "
                                f"{guarded.name}/; use a folder outside data/ and models/")
    return folder


def watch_folder(ws: Workspace, folder: Path, once: bool = False, stop_event=None,
                 overrides: list[str] | None = None) -> WatchSummary:
    """Watch `folder` until stopped (Ctrl-C, `stop_event`), or with `once` until it is empty."""
    import watchfiles

    folder, wcfg = check_folder(folder, ws), load_config(ws.params, overrides).watch
    mode, summary = retrain_mode(wcfg.retrain), WatchSummary()
    tracker, ms = DropTracker(folder, wcfg.marker, wcfg.quiet_seconds), int(wcfg.poll_seconds * 1000)
    log.info("watching %s (a drop is complete with %s or after %.0f s quiet); retrain: %s",
             folder, wcfg.marker, wcfg.quiet_seconds, mode)
    for changes in watchfiles.watch(folder, watch_filter=None, debounce=ms, rust_timeout=ms,
                                    yield_on_timeout=True, stop_event=stop_event,
                                    force_polling=wcfg.force_polling, raise_interrupt=False):
        tracker.touch(path for _, path in changes)
        ready = tracker.ready()
        if ready:
            try:
                run_cycle(ws, folder, ready, wcfg, mode, summary, overrides)
            except EvergreenError as exc:  # busy workspace, no event sent: the watcher goes on
                if once:
                    raise
                log.error("%s%s", exc, "; the drops wait for the next try"
                          if isinstance(exc, WorkspaceBusyError) else "")
        if once and not tracker.drops():
            break
    return summary
