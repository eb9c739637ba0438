"""What the server keeps and for how long (app/limits.py, issue 19): sessions past their
lifetime, the upload folder's age and total size, request bodies, pasted data URLs,
--session-ttl, SIGTERM. Memory itself is measured by bench/soak.py (RSS); these tests check
the behaviour behind it, with no timing asserted (waits are bounded polls, generous enough
for a slow, busy machine)."""
import base64
import datetime
import gc
import importlib.util
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import CAT, ROOT, free_port, start_app
from tests.app_api import (ANALYSE_INPUTS, file_value, fn_index, raw_analyse, raw_upload,
                           scores_of, status_of)

MB = 2 ** 20

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


def wait_for(condition, limit_s=180, step_s=0.25):
    """Poll until condition() is true, at most limit_s; returns its last value."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    return condition()


def photo(path, size=(64, 48), seed=0):
    """A PNG of random pixels (distinct bytes for each seed; it does not compress)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
    return path


def noise_png(path, megabytes, seed):
    side = int((megabytes * MB / 3) ** 0.5)
    return photo(path, (side, side), seed)


def data_url(raw, kind="image/png"):
    return f"data:{kind};base64," + base64.b64encode(raw).decode()


def one_line(text):
    return text.startswith("⚠️ ") and "\n" not in text and "Traceback" not in text


# --- sessions and the upload folder's age ---------------------------------------------------

@pytest.fixture
def quick(tmp_path, one_thread):
    """A page whose sessions live 5 s and whose uploads live 3 s (checked every second or so).
    One per test: its cache pruning must not reach the files of another test's page."""
    from app.limits import ServeLimits
    running = start_app(tmp_path / "missing.pth", limits=ServeLimits(
        session_ttl_s=5, upload_max_age_s=3, cache_check_s=1))
    yield running
    running.demo.close()


def test_sessions_idle_past_their_lifetime_are_forgotten(quick, monkeypatch):
    """Gradio kept each session's copy of the page until 256 newer sessions pushed it out,
    whatever its age, and Sessions kept an expired analysis (its score maps) until the next
    request came: an idle server held both for good."""
    holder, analyses = quick.demo.state_holder, quick.demo.csra_sessions
    stored = []
    put = analyses.put
    monkeypatch.setattr(analyses, "put", lambda s, a: (stored.append(s), put(s, a)))
    sessions = [f"idle-{uuid.uuid4()}" for _ in range(4)]
    kept = []
    for s in sessions:
        out = raw_analyse(quick, file_value(CAT), s)
        assert scores_of(out), status_of(out)
        # held while in use (unless already forgotten, on a slow machine)
        kept += [weakref.ref(state) for state in [holder.session_data.get(s)] if state is not None]
    assert stored == sessions                  # each one's analysis was kept

    def forgotten():
        return not any(s in holder.session_data or s in analyses.items for s in sessions)
    assert wait_for(forgotten), "sessions idle past their lifetime are still held"
    queue = quick.demo._queue          # and Gradio's queue entries for them (kept for good)
    assert wait_for(lambda: not any(s in queue.pending_event_ids_session
                                    or s in queue.pending_messages_per_session for s in sessions))
    gc.collect()
    assert all(ref() is None for ref in kept)         # nothing else holds Gradio's copies
    again = raw_analyse(quick, file_value(CAT), sessions[0])    # a late return just works
    assert scores_of(again) and "cat.jpg" in status_of(again)


def test_uploads_older_than_their_age_are_deleted(quick, tmp_path):
    uploaded = Path(raw_upload(quick, photo(tmp_path / "old.png", seed=1)))
    assert quick.demo.GRADIO_CACHE in str(uploaded)      # received, kept for 3 s
    assert wait_for(lambda: not uploaded.exists()), "an old upload is still kept"


def test_the_reaper_forgets_analyses_but_not_one_just_made():
    """Gradio's idle sessions lose their analysis too, unless the page's upload call (which
    Gradio does not see) has just made one; analyses Gradio never saw go at their own
    lifetime (here longer than the reaper's), without waiting for the next request."""
    from app.limits import SessionReaper
    from app.sessions import Sessions
    clock = [0.0]
    analyses = Sessions(ttl=7200, clock=lambda: clock[0])
    for s in ("idle", "uploaded-again", "page-only"):
        analyses.put(s, object())
    clock[0] = 4000.0
    analyses.put("uploaded-again", object())          # the page's upload call, just now
    analyses.put("busy", object())
    now = datetime.datetime(2030, 1, 1)
    hours_ago = now - datetime.timedelta(hours=2)
    holder = SimpleNamespace(session_data={"idle": 1, "uploaded-again": 2, "busy": 3},
                             time_last_used={"idle": hours_ago, "uploaded-again": hours_ago,
                                             "busy": now},
                             lock=threading.Lock(), delete_state=lambda s: None)
    reaper = SessionReaper(3600, analyses)
    assert reaper.reap(holder, now=now) == 2
    assert set(holder.session_data) == set(holder.time_last_used) == {"busy"}
    assert set(analyses.items) == {"uploaded-again", "page-only", "busy"}
    clock[0] = 8000.0                                 # page-only: 8000 s unused, past 7200
    assert reaper.reap(holder, now=now) == 0
    assert set(analyses.items) == {"uploaded-again", "busy"}


# --- the upload folder's size, request bodies, pasted images -------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory, one_thread):
    """A page with small limits: pictures up to 1 MB, 3 MB of uploads in all."""
    from app.limits import ServeLimits
    running = start_app(tmp_path_factory.mktemp("small") / "missing.pth", limits=ServeLimits(
        max_file_bytes=1 * MB, upload_cache_bytes=3 * MB))
    yield running
    running.demo.close()


def received_total(app):
    return sum(os.path.getsize(p) for p in list(app.demo.upload_file_set) if os.path.exists(p))


def test_the_upload_folder_keeps_a_total_size(small, tmp_path):
    """Gradio's upload route needs no session and kept every file for an hour. Now the oldest
    go as soon as the uploads pass the budget, before the upload's answer."""
    paths = [Path(raw_upload(small, noise_png(tmp_path / f"p{i}.png", 0.9, i)))
             for i in range(6)]                                   # 6 x 0.9 MB, budget 3 MB
    assert received_total(small) <= 3 * MB
    assert paths[-1].is_file() and paths[-2].is_file()            # the newest stay
    assert not paths[0].exists() and not paths[1].exists()        # the oldest went first
    newest = raw_analyse(small, file_value(paths[-1], "p5.png", marked=True), "uploader")
    assert scores_of(newest) and "p5.png" in status_of(newest)
    oldest = raw_analyse(small, file_value(paths[0], "p0.png", marked=True), "uploader")
    assert status_of(oldest) == "⚠️ p0.png: no such file" and scores_of(oldest) is None


def test_request_bodies_over_the_limit_get_413(small, tmp_path):
    limit = small.demo.csra_limits.max_body_bytes                 # 1 MB as base64, + 1 MB
    files = [noise_png(tmp_path / f"m{i}.png", 0.9, 10 + i) for i in range(3)]
    with httpx.Client(base_url=small.url, timeout=120) as http:
        many = http.post("gradio_api/upload",                     # each file under 1 MB
                         files=[("files", (p.name, p.read_bytes(), "image/png")) for p in files])
        assert many.status_code == 413, many.text[:200]
        join = {"data": [{"url": "data:image/png;base64," + "A" * limit}, *ANALYSE_INPUTS],
                "fn_index": fn_index(small, api_name="analyse"), "session_hash": "big-json"}
        big_json = http.post("gradio_api/queue/join", json=join)
        assert big_json.status_code == 413, big_json.text[:200]

        def chunks():                                             # no Content-Length
            for _ in range(limit // 65536 + 2):
                yield b"A" * 65536
        chunked = http.post("gradio_api/queue/join", content=chunks(),
                            headers={"content-type": "application/json"})
        assert chunked.status_code == 413, chunked.text[:200]
        assert "request body over the limit" in chunked.text
    one = raw_upload(small, files[0])                             # one picture: fine
    assert Path(one).is_file()


def test_the_page_limits_request_bodies_like_uploads(app):
    """With the page's own limits: a JSON body of 34 MB was accepted (a data URL skips the
    20 MB upload limit), and so was an upload request carrying two 15 MB files."""
    big = "A" * (34 * MB)
    with httpx.Client(base_url=app.url, timeout=120) as http:
        join = {"data": [{"url": "data:image/png;base64," + big}, *ANALYSE_INPUTS],
                "fn_index": fn_index(app, api_name="analyse"), "session_hash": "json-34mb"}
        assert http.post("gradio_api/queue/join", json=join).status_code == 413
        two = [("files", (f"f{i}.png", bytes([i]) * (15 * MB), "image/png")) for i in range(2)]
        assert http.post("gradio_api/upload", files=two).status_code == 413
        one = http.post("gradio_api/upload", files=[("files", ("cat.jpg", CAT.read_bytes()))])
        assert one.status_code == 200


def test_a_pasted_image_works_and_bad_data_gets_one_line(app):
    """The paste's data URL is decoded from memory; broken base64 used to be decoded anyway
    (its bad characters skipped) and reported as 'not an image'."""
    session = f"paster-{uuid.uuid4()}"
    out = raw_analyse(app, {"url": data_url(CAT.read_bytes(), "image/jpeg")}, session)
    assert scores_of(out)["name"] == "pasted image", status_of(out)
    assert status_of(out).startswith("pasted image — 448×298 px"), status_of(out)
    with_path = raw_analyse(app, {"path": None, "url": data_url(CAT.read_bytes())}, session)
    assert scores_of(with_path)["name"] == "pasted image"
    text = raw_analyse(app, {"url": data_url(b"not a picture at all")}, session)
    assert one_line(status_of(text)) and status_of(text).startswith("⚠️ pasted image: ")
    junk = raw_analyse(app, {"url": "data:image/png;base64,@@@@"}, session)
    assert status_of(junk) == "⚠️ pasted image: not valid base64 data"
    plain = raw_analyse(app, {"url": "data:image/png,%89PNG"}, session)
    assert status_of(plain) == "⚠️ pasted image: not base64 data"


def test_a_pasted_image_is_limited_like_an_upload(small):
    """Its size was not limited: any data URL the request body could hold was decoded."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (700, 700, 3), dtype=np.uint8)
                    ).save(buf, "PNG")                            # 1.4 MB: over the 1 MB limit
    assert MB < len(buf.getvalue()) < small.demo.csra_limits.max_body_bytes
    before = small.calls["backbone"]
    large = raw_analyse(small, {"url": data_url(buf.getvalue())}, "paster")
    assert one_line(status_of(large)), status_of(large)
    assert status_of(large).startswith("⚠️ pasted image: about 1.4 MB, more than the limit of 1 MB")
    assert scores_of(large) is None and small.calls["backbone"] == before
    fits = raw_analyse(small, {"url": data_url(CAT.read_bytes())}, "paster")
    assert scores_of(fits)["name"] == "pasted image"


def test_upload_budget_touches_only_received_files_in_its_folder(tmp_path):
    from app.limits import UploadBudget
    folder, outside = tmp_path / "cache", tmp_path / "elsewhere"
    (folder / "a").mkdir(parents=True)
    outside.mkdir()
    old, new = folder / "a" / "old.bin", folder / "a" / "new.bin"
    stranger, foreign = folder / "a" / "not-received.bin", outside / "x.bin"
    last = 0
    for f in (old, new, stranger, foreign):                     # written in this order
        while True:
            f.write_bytes(b"x" * 600)
            if f.stat().st_ctime_ns > last:
                last = f.stat().st_ctime_ns
                break
            time.sleep(0.01)                                    # a coarse file system clock
    received = {str(old), str(new), str(foreign)}
    budget = UploadBudget(folder, lambda: received, 1000)
    assert budget.prune() == 600
    assert not old.exists() and new.exists() and stranger.exists() and foreign.exists()
    assert received == {str(new), str(foreign)}
    assert budget.prune() == 0


# --- the command line ---------------------------------------------------------------------

def app_script():
    """app.py, a script beside the app/ package, loaded by its path."""
    spec = importlib.util.spec_from_file_location("app_script", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_session_ttl_flag(capsys):
    script = app_script()
    assert script.parse_args([]).session_ttl == 3600
    assert script.parse_args(["--session-ttl", "5"]).session_ttl == 5
    with pytest.raises(SystemExit) as stop:
        script.parse_args(["--session-ttl", "0"])
    assert stop.value.code == 2
    assert "--session-ttl must be a whole number of seconds >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    """SIGTERM (docker stop, systemd, kill) left a csra-app-downloads-* folder and the
    uploads in the temp directory; Ctrl-C did not."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSRA_")}
    env.update(CSRA_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch"), PYTHONPATH=str(ROOT),
               GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(temp),
               GRADIO_TEMP_DIR=str(temp / "gradio"))
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port),
                                   "--classifier", "none", "--session-ttl", "60"],
                                  cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def up():
            if server.poll() is not None:
                return True
            try:
                return httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        # as long as it takes to load the embedded model on a busy machine, within reason
        assert wait_for(up, limit_s=900, step_s=0.5) and server.poll() is None, log.read_text()
        assert list(temp.glob("csra-app-downloads-*")), "the app makes its downloads folder"
        with open(CAT, "rb") as f:
            uploaded = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", timeout=120,
                                  files={"files": ("cat.jpg", f, "image/jpeg")}).json()[0]
        assert Path(uploaded).is_file() and str(temp) in uploaded
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=60)
    assert list(temp.glob("csra-app-downloads-*")) == [], log.read_text()[-2000:]
    assert not Path(uploaded).exists(), "Gradio's files for the server are deleted too"
    assert code == 0, log.read_text()[-2000:]


def test_no_monitoring_page(app):
    """Gradio's monitoring page is on unless told otherwise: /monitoring/summary showed
    anyone each API's request count, success rate and latency."""
    for route in ("monitoring", "monitoring/summary", "monitoring/anything"):
        response = httpx.get(app.url + route, timeout=60)
        assert response.status_code == 403, (route, response.text[:200])


def test_queue_entries_go_only_for_gone_sessions_with_nothing_pending():
    import asyncio
    from collections import OrderedDict

    from app.limits import forget_queue_entries
    waiting = asyncio.Queue()
    waiting.put_nowait("a message not yet read")
    queue = SimpleNamespace(
        pending_event_ids_session={"gone": set(), "live": set(), "busy": {"event-1"},
                                   "unread": set()},
        pending_messages_per_session=OrderedDict(gone=asyncio.Queue(), live=asyncio.Queue(),
                                                 busy=asyncio.Queue(), unread=waiting))
    assert forget_queue_entries(queue, live_sessions={"live": object()}) == 1
    assert set(queue.pending_event_ids_session) == {"live", "busy", "unread"}
    assert set(queue.pending_messages_per_session) == {"live", "busy", "unread"}
    assert forget_queue_entries(SimpleNamespace(), live_sessions={}) == 0   # Gradio renamed them


def test_housekeeping_runs_jobs_in_threads_and_loop_jobs_on_the_loop():
    """Each round runs the jobs in worker threads, then the loop jobs on the event loop (where
    Gradio's queue may be touched); a failing job is logged and the rounds go on."""
    import asyncio

    from app.limits import housekeeping
    ran = []

    def failing(app):
        ran.append("failing")
        raise RuntimeError("a job that fails")

    async def main():
        loop_thread = threading.get_ident()
        jobs = [failing, lambda app: ran.append(("thread", threading.get_ident() != loop_thread))]
        loop_jobs = [lambda app: ran.append(("loop", threading.get_ident() == loop_thread))]
        async with housekeeping(0.01, jobs, loop_jobs)(app=None):
            while ran.count(("loop", True)) < 3 and len(ran) < 30:
                await asyncio.sleep(0.01)

    asyncio.run(main())
    assert ran[:3] == ["failing", ("thread", True), ("loop", True)], ran
    assert ran.count(("loop", True)) >= 3 and ran.count("failing") >= 3, ran
