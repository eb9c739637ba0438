"""What the server keeps, and for how long: the limits Gradio has no option for.

Gradio's own options do part of it (app/ui.py): `max_file_size` (20 MB a file),
`delete_cache` (uploads older than the age are deleted), `state_session_capacity` (256
sessions). Each session's analysis lives in app/sessions.py (gone after its lifetime unused).
What they leave open:

- request bodies: Gradio limits each uploaded file, not a request (an upload may carry
  1000 files) and not a JSON body (a pasted image arrives as a data URL inside one).
  BodyLimit refuses a larger body with 413 before it is read.
- the upload folder's total size: UploadBudget deletes the oldest uploads once those
  this server received take more than the budget (checked after every upload).
- sessions: Gradio keeps each session's copy of the page's components (its config, and
  the components an update built) until 256 newer sessions push it out, whatever their
  age, and our Sessions store lets an expired analysis go only when someone next asks it
  for one. SessionReaper forgets a session idle for the session lifetime, in both, then
  hands the freed memory back to the system (glibc malloc_trim, also run on its own every
  housekeeping interval). Gradio's queue also keeps a set for every session that ever
  sent an event, for good: forget_queue_entries drops those of forgotten sessions.
The periodic jobs run in the server's lifespan (housekeeping), passed to Gradio with
launch(app_kwargs=...), a documented FastAPI parameter.
"""
import asyncio
import contextlib
import ctypes
import ctypes.util
import datetime
import gc
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import anyio

log = logging.getLogger("csra.app")

MB = 2 ** 20


@dataclass(frozen=True)
class ServeLimits:
    """The limits of one page (app/ui.py build_demo and launch; docs/app.md says them)."""
    max_file_bytes: int = 20 * MB        # one uploaded or pasted picture
    upload_cache_bytes: int = 500 * MB   # all uploads this server keeps, oldest deleted first
    upload_max_age_s: int = 1800         # uploads older than this are deleted (Gradio)...
    cache_check_s: int = 300             # ...at this interval
    session_ttl_s: int = 3600            # a session idle this long is forgotten

    @property
    def max_body_bytes(self):
        """The largest request body: a max-size picture as a base64 data URL, plus 1 MB."""
        return 4 * math.ceil(self.max_file_bytes / 3) + MB

    @property
    def housekeeping_s(self):
        """How often the sessions and the upload budget are checked."""
        return max(1.0, min(60.0, self.session_ttl_s / 4))


def megabytes(n):
    return f"{n / MB:,.0f} MB" if n >= MB else f"{n / MB:.1f} MB"


class BodyLimit:
    """ASGI middleware: a request whose body is over max_bytes gets 413 (by its
    Content-Length before anything is read, or as soon as a chunked body passes the limit;
    what the app answered by then is dropped). A POST to Gradio's upload route runs
    after_upload() (the upload budget) in a worker thread before its answer goes out."""

    def __init__(self, app, max_bytes, after_upload=None):
        self.app = app
        self.max_bytes = max_bytes
        self.after_upload = after_upload

    async def refuse(self, send):
        body = (f"request body over the limit of {megabytes(self.max_bytes)} "
                "(one picture: see the page's upload limit)").encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self.refuse(send)
        seen = 0
        over = False
        refused = False
        upload = (self.after_upload is not None and scope.get("method") == "POST"
                  and scope.get("path", "").rstrip("/").endswith("/gradio_api/upload"))

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise BodyTooLarge()
            return message

        async def answer(message):
            nonlocal refused
            if over:
                if not refused:
                    refused = True
                    await self.refuse(send)
                return
            if upload and message["type"] == "http.response.start":
                # the budget holds by the time the uploader hears back
                await anyio.to_thread.run_sync(self.after_upload)
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except BodyTooLarge:
            pass
        if over and not refused:
            await self.refuse(send)


class BodyTooLarge(Exception):
    """Raised inside a request whose body passed the limit (BodyLimit answers 413)."""


class UploadBudget:
    """Keeps the uploads this server received (Gradio's set of their paths) under
    limit_bytes in all, deleting the oldest first; files outside folder are never touched."""

    def __init__(self, folder, received, limit_bytes):
        self.folder = os.path.realpath(folder)
        self.received = received          # () -> Gradio's set of received upload paths
        self.limit = limit_bytes
        self.lock = threading.Lock()

    def files(self):
        """[(ctime, size, path)] of the received uploads still on disk, oldest first."""
        found = []
        for path in list(self.received()):
            try:
                real = os.path.realpath(path)
                if os.path.commonpath([real, self.folder]) != self.folder:
                    continue
                st = os.stat(real)
            except (OSError, ValueError):
                continue
            found.append((st.st_ctime_ns, st.st_size, path))
        return sorted(found)

    def prune(self):
        """Delete the oldest uploads until the rest fit the budget; returns the bytes freed."""
        with self.lock:
            received = self.received()
            files = self.files()
            total = sum(size for _, size, _ in files)
            freed = 0
            for _, size, path in files:
                if total - freed <= self.limit:
                    break
                with contextlib.suppress(OSError):
                    os.remove(path)
                    freed += size
                    received.discard(path)
                    with contextlib.suppress(OSError):
                        Path(path).parent.rmdir()   # Gradio's per-upload folder, when empty
            if freed:
                log.info("upload budget: deleted %s of the oldest uploads (%s kept, limit %s)",
                         megabytes(freed), megabytes(total - freed), megabytes(self.limit))
            return freed


class SessionReaper:
    """Forgets the sessions idle for ttl_s: in Gradio (their State values, through Gradio's
    own delete_state, and their copies of the page's components) and in the page's own
    Sessions store (analyses: their cached score maps), then returns the freed memory to
    the system. Reads Gradio's StateHolder (session_data, time_last_used, lock, the fields
    its own expiry uses); if a Gradio release renames them, it logs that once and forgets
    only the analyses."""

    def __init__(self, ttl_s, analyses=None):
        self.ttl = datetime.timedelta(seconds=ttl_s)
        self.analyses = analyses          # app.sessions.Sessions, or None
        self.warned = False

    def reap(self, holder, now=None):
        """The number of Gradio sessions forgotten."""
        idle = self.reap_gradio(holder, now)
        if self.analyses is not None:
            for session in idle:
                # unless the page's upload call (which Gradio does not see) used it since
                self.analyses.drop(session, unused_for=self.ttl.total_seconds())
            self.analyses.sweep()         # those Gradio never saw, past their own lifetime
        if idle:
            gc.collect()
            trim_memory()
            log.info("forgot %d session(s) idle for over %s", len(idle), self.ttl)
        return len(idle)

    def reap_gradio(self, holder, now=None):
        """The Gradio sessions forgotten (their hashes)."""
        try:
            sessions, last_used, lock = holder.session_data, holder.time_last_used, holder.lock
        except AttributeError as err:
            if not self.warned:
                log.warning("sessions are not reaped: Gradio's StateHolder changed (%s)", err)
                self.warned = True
            return []
        now = now or datetime.datetime.now()
        idle = [s for s, t in list(last_used.items()) if now - t > self.ttl]
        forgotten = []
        for session in idle:
            with contextlib.suppress(Exception):
                holder.delete_state(session)      # Gradio's expiry: State delete callbacks
            with lock:
                if session in last_used and now - last_used[session] > self.ttl:
                    sessions.pop(session, None)
                    last_used.pop(session, None)
                    forgotten.append(session)
        return forgotten


def forget_replaced_components(holder, session, page_ids):
    """Forget the copies of components that Gradio keeps for nothing in one session; the
    number forgotten. An answer that changes a component's settings (a gr.update with new
    choices, info or visibility: the model switch's class lists) makes Gradio build a new
    copy of that component, filed in the session under the page's id for it and also under
    an id of its own, which nothing reads; each switch kept 2 class lists of 1,000 names
    for the session's lifetime. page_ids: the ids of the page's own blocks (demo.blocks).
    Reads Gradio's StateHolder like SessionReaper; nothing if Gradio changed it."""
    try:
        state = holder.session_data.get(session)
        blocks = state.blocks_config.blocks if state is not None else {}
    except AttributeError:
        return 0
    stale = [block_id for block_id in list(blocks) if block_id not in page_ids]
    for block_id in stale:
        blocks.pop(block_id, None)
    return len(stale)


def forget_queue_entries(queue, live_sessions):
    """Gradio's queue keeps two entries for each session that ever sent an event: its
    message queue (for the last 2,000 sessions) and the set of its pending event ids (for
    every session, for good: a client that sends each request under a new session hash
    grew it without end). Forget those of sessions no longer live (not in live_sessions:
    Gradio's sessions, after the reaper) with nothing pending or unread. Must run on the
    event loop, where Gradio reads them. The number of sessions forgotten; nothing if
    Gradio renamed them."""
    try:
        pending, messages = queue.pending_event_ids_session, queue.pending_messages_per_session
    except AttributeError:
        return 0

    def unread(s):
        return s in messages and not messages[s].empty()

    gone = {s for s, ids in list(pending.items())
            if not ids and s not in live_sessions and not unread(s)}
    gone |= {s for s in list(messages) if s not in live_sessions and s not in pending
             and not unread(s)}
    for s in gone:
        pending.pop(s, None)
        messages.pop(s, None)
    return len(gone)


_LIBC = None


def trim_memory():
    """Hand memory the allocator holds free back to the system (glibc only; else nothing)."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def housekeeping(every_s, jobs, loop_jobs=()):
    """A FastAPI lifespan that runs each job(app) in a worker thread, then each of
    loop_jobs(app) on the event loop (quick ones, on what only the loop may touch), every
    every_s seconds while the server runs (Gradio wraps it with its own,
    app_kwargs={"lifespan": ...})."""
    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def run(job, on_loop):
            try:
                if on_loop:
                    job(app)
                else:
                    await anyio.to_thread.run_sync(job, app)
            except Exception:  # noqa: BLE001 - housekeeping must never stop serving
                log.exception("housekeeping job failed")

        async def loop():
            while True:
                await asyncio.sleep(every_s)
                for job in jobs:
                    await run(job, on_loop=False)
                for job in loop_jobs:
                    await run(job, on_loop=True)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return lifespan


def server_options(demo, limits):
    """launch()'s app_kwargs for a page: the body limit (with the upload budget after each
    upload) as FastAPI middleware; in its lifespan, every housekeeping_s, the session reaper,
    the budget, Gradio's queue entries of forgotten sessions, and malloc_trim (the handlers
    run in many worker threads, each with its own malloc arena: freed memory there stays
    counted in the process's RSS until trimmed)."""
    from starlette.middleware import Middleware

    budget = UploadBudget(demo.GRADIO_CACHE, lambda: demo.upload_file_set,
                          limits.upload_cache_bytes)
    reaper = SessionReaper(limits.session_ttl_s, getattr(demo, "csra_sessions", None))
    return {
        "middleware": [Middleware(BodyLimit, max_bytes=limits.max_body_bytes,
                                  after_upload=budget.prune)],
        "lifespan": housekeeping(limits.housekeeping_s,
                                 [lambda app: reaper.reap(app.state_holder),
                                  lambda app: budget.prune(),
                                  lambda app: trim_memory()],
                                 [lambda app: forget_queue_entries(
                                     app.get_blocks()._queue, app.state_holder.session_data)]),
    }
