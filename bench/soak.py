"""Does the server hold its memory? `python app.py` with the embedded model, driven for a while.

    python bench/soak.py [--phases refresh,uploads,sessions,decode] [--refreshes 2000]
                         [--rounds 100] [--minutes 10] [--clients 8] [--uploads 25]
                         [--sessions 200] [--session-ttl 30] [--app PATH/app.py]

Each phase starts its own server: `python app.py --classifier none --session-ttl T` on
127.0.0.1, offline (CSRA_OFFLINE=1) in an empty folder, so it serves the embedded
EfficientNet-Lite0 ImageNet classifier + CSRA (1000 classes), exactly as `python app.py`
does on a machine with no VOC weights. The server's resident memory (VmRSS of its process)
is read between requests; plain HTTP requests (httpx) drive it, as the page's API:

  refresh   one session: one upload, then --refreshes /refresh calls (lambda, threshold,
            colour scale and close-up class varied). Goal: less than 20 MB added.
  uploads   --clients sessions at once, each --uploads times: /analyse with an example photo,
            then /refresh (what the page's chained close-up runs) — one round; --rounds
            rounds, or as many as fit in --minutes. Goal: the last round ends within 50 MB of
            where round 2 started.
  sessions  --sessions new sessions, each one upload and one refresh, then left idle past
            --session-ttl. Goal: at least 80% of the memory they took is given back.
  decode    a 7000x7000 PNG (49 megapixels, 160 KB) and a 1x5000 PNG: the server's peak
            memory over each upload (VmHWM, reset before) and the status line.

The API calls are the page's own (app/ui.py): /analyse takes the image, the model, lambda,
threshold, top_k, alpha, scale and the picked classes; /refresh takes lambda, threshold,
top_k, alpha, scale, the picked classes and the close-up class.

It prints a table, a GOALS line (met or MISSED per goal) and ends with
    RESULT refresh_added_mb=... uploads_round2_mb=... uploads_end_mb=... uploads_rounds=...
           sessions_taken_mb=... sessions_given_back_pct=... decode_peak_mb=...
(only the phases run). Bounded throughout: every wait has a limit, every loop a count.
Small numbers check that it runs, e.g. --refreshes 100 --rounds 2 --uploads 3 --clients 2
--sessions 10 --session-ttl 5; the goals are meant for the defaults.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
PHOTOS = ["cat_and_person.jpg", "cat.jpg", "astronaut.jpg", "grace_hopper.jpg",
          "camera_gray.jpg", "coffee.jpg", "rocket.jpg"]
LABEL = "ImageNet classifier + CSRA, no training (efficientnet_lite0, 1000 classes)"
THRESHOLD = 0.1          # the page's default for a softmax over 1000 classes
FOCUS = ["tabby", "Egyptian cat", "tiger cat", "espresso", "space shuttle"]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def rss_mb(pid):
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024


def peak_mb(pid):
    return int(proc_status(pid)["VmHWM"].split()[0]) / 1024


def reset_peak(pid):
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class Server:
    """python app.py in an empty folder, offline; stopped with SIGTERM."""

    def __init__(self, app_py, session_ttl, folder):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CSRA_")}
        env.update(CSRA_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                   PYTHONPATH=os.pathsep.join([str(Path(app_py).parent), env.get("PYTHONPATH", "")]),
                   TORCH_HOME=str(Path(folder) / "torch"))
        self.log = open(Path(folder) / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, str(app_py), "--port", str(self.port), "--classifier", "none",
             "--session-ttl", str(session_ttl)],
            cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        import httpx
        for _ in range(600):                      # up to 5 minutes on a busy machine
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "config", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("the server did not answer within 5 minutes")
        self.pid = self.process.pid

    def rss(self):
        return rss_mb(self.pid)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=60)
        self.log.close()


class RawClient:
    """The page's API over plain HTTP (httpx), one session at a time (session_hash): what
    gradio_client sends, at a fraction of its CPU (it took a whole core of the two and slowed
    the rounds). predict() uploads a file argument first, joins Gradio's queue and reads the
    session's event stream to the answer; an error raises RuntimeError."""

    def __init__(self, url):
        import httpx
        self.http = httpx.Client(base_url=url, timeout=600)
        config = self.http.get("config").json()
        self.fn_index = {d["api_name"]: d["id"] for d in config["dependencies"]
                         if d.get("api_name")}
        self.session_hash = str(uuid.uuid4())

    def upload(self, value):
        with open(value["path"], "rb") as f:
            r = self.http.post("gradio_api/upload",
                               files={"files": (value["orig_name"], f, "application/octet-stream")})
        r.raise_for_status()
        return {**value, "path": r.json()[0]}

    def predict(self, *data, api_name):
        data = [self.upload(v) if isinstance(v, dict) and v.get("meta", {}).get("_type")
                == "gradio.FileData" else v for v in data]
        body = {"data": data, "fn_index": self.fn_index[api_name.strip("/")],
                "session_hash": self.session_hash}
        event = self.http.post("gradio_api/queue/join", json=body)
        event.raise_for_status()
        event_id = event.json()["event_id"]
        with self.http.stream("GET", f"gradio_api/queue/data?session_hash={self.session_hash}") as r:
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                    if not message.get("success"):
                        raise RuntimeError(str(message.get("output"))[:200])
                    return message["output"]["data"]
        raise RuntimeError(f"{api_name}: the event stream ended without an answer")

    def close(self):
        self.http.close()


def client_for(server):
    return RawClient(server.url)


def analyse(client, path, lam=0.1):
    """/analyse: image, model, lam, threshold, top_k, alpha, scale, picked, focus; the outputs
    start with the status line."""
    image = {"path": str(path), "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}
    return client.predict(image, LABEL, lam, THRESHOLD, 20, 0.5, "global", [], None,
                          api_name="/analyse")


def refresh(client, i, focus=None):
    """/refresh: lam, threshold, top_k, alpha, scale, picked, focus."""
    return client.predict((i % 10) / 10, THRESHOLD, 20, 0.5, "per-map" if i % 50 >= 25 else "global",
                          [], focus, api_name="/refresh")


def phase_refresh(server, args, rows, result, goals):
    client = client_for(server)
    analyse(client, ASSETS / "cat.jpg")
    for i in range(100):                                  # warm-up
        refresh(client, i, FOCUS[(i // 20) % len(FOCUS)])
    start, t0 = server.rss(), time.perf_counter()
    for i in range(args.refreshes):
        refresh(client, i, FOCUS[(i // 20) % len(FOCUS)])
    end, seconds = server.rss(), time.perf_counter() - t0
    client.close()
    added = end - start
    rows.append(("refresh", f"{args.refreshes} /refresh in one session (after 100 warm-up)",
                 f"{start:.0f} -> {end:.0f}", f"{added:+.1f} MB", "< 20 MB added",
                 "met" if added < 20 else "MISSED", f"{seconds:.0f} s"))
    result["refresh_added_mb"] = f"{added:.1f}"
    goals["refresh"] = added < 20


def phase_uploads(server, args, rows, result, goals):
    clients = [client_for(server) for _ in range(args.clients)]
    photos = [ASSETS / p for p in PHOTOS if (ASSETS / p).is_file()]
    errors = []

    def work(c, k):
        for j in range(args.uploads):
            try:
                analyse(c, photos[(k + j) % len(photos)], lam=(j % 10) / 10)
                refresh(c, j)
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors.append(repr(err)[:200])

    starts, t0 = [], time.perf_counter()
    for r in range(1, args.rounds + 1):
        if r > 2 and time.perf_counter() - t0 > args.minutes * 60:
            break
        starts.append(server.rss())
        threads = [threading.Thread(target=work, args=(c, k)) for k, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"  uploads round {r}: started at {starts[-1]:.0f} MB, "
              f"{time.perf_counter() - t0:.0f} s so far", flush=True)
    end, seconds = server.rss(), time.perf_counter() - t0
    for c in clients:
        c.close()
    done = len(starts)
    round2 = starts[1] if done > 1 else starts[0]
    drift = end - round2
    rows.append(("uploads", f"{done} rounds of {args.clients} clients x {args.uploads} uploads "
                 f"(+ /refresh each); {len(errors)} errors",
                 f"{round2:.0f} (round 2) -> {end:.0f}", f"{drift:+.1f} MB",
                 "within 50 MB of round 2", "met" if abs(drift) <= 50 and not errors else "MISSED",
                 f"{seconds:.0f} s"))
    rows.append(("", "RSS at the start of rounds 1, 2, ... (MB): "
                 + " ".join(f"{s:.0f}" for s in starts), "", "", "", "", ""))
    if errors:
        print("  errors:", errors[:3])
    result.update(uploads_round2_mb=f"{round2:.0f}", uploads_end_mb=f"{end:.0f}",
                  uploads_rounds=done, uploads_errors=len(errors))
    goals["uploads"] = abs(drift) <= 50 and not errors


def phase_sessions(server, args, rows, result, goals):
    client = client_for(server)
    for i in range(8):                                    # warm-up sessions
        client.session_hash = str(uuid.uuid4())
        analyse(client, ASSETS / PHOTOS[i % len(PHOTOS)])
    base, t0 = server.rss(), time.perf_counter()
    for i in range(args.sessions):
        client.session_hash = str(uuid.uuid4())
        analyse(client, ASSETS / PHOTOS[i % len(PHOTOS)], lam=(i % 10) / 10)
        refresh(client, i)
    client.close()
    taken, idle_from = server.rss(), time.perf_counter()
    idle_s = args.session_ttl + 2 * max(1.0, min(60.0, args.session_ttl / 4)) + 10
    while time.perf_counter() - idle_from < idle_s:       # idle past the lifetime
        time.sleep(1)
    after = server.rss()
    took = taken - base
    given = (taken - after) / took * 100 if took > 0 else 100.0
    rows.append(("sessions", f"{args.sessions} new sessions (1 upload + 1 refresh each), then "
                 f"{idle_s:.0f} s idle (lifetime {args.session_ttl} s)",
                 f"{base:.0f} -> {taken:.0f} -> {after:.0f}",
                 f"+{took:.1f} MB taken, {given:.0f}% given back", ">= 80% given back",
                 "met" if given >= 80 else "MISSED", f"{time.perf_counter() - t0:.0f} s"))
    result.update(sessions_taken_mb=f"{took:.1f}", sessions_given_back_pct=f"{given:.0f}")
    goals["sessions"] = given >= 80


def phase_decode(server, args, rows, result, goals, folder):
    from PIL import Image
    big, strip = Path(folder) / "big-49mp.png", Path(folder) / "strip-1x5000.png"
    Image.new("RGB", (7000, 7000), (120, 30, 200)).save(big, optimize=True)
    Image.new("RGB", (1, 5000), (10, 200, 30)).save(strip)
    client = client_for(server)
    analyse(client, ASSETS / "cat.jpg")
    peaks = []
    for path in (big, strip):
        before = server.rss()
        reset_peak(server.pid)
        status = analyse(client, path)[0]
        peak, after = peak_mb(server.pid), server.rss()
        peaks.append(peak - before)
        rows.append(("decode", f"{path.name} ({path.stat().st_size // 1024} KB): "
                     f"{status.split(' Network')[0][:70]}", f"{before:.0f} -> peak {peak:.0f} -> {after:.0f}",
                     f"peak +{peak - before:.0f} MB", "", "", ""))
    client.close()
    result["decode_peak_mb"] = f"{peaks[0]:.0f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phases", default="refresh,uploads,sessions,decode")
    p.add_argument("--refreshes", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--minutes", type=float, default=10.0,
                   help="the uploads phase stops starting rounds after this long (at least 2 rounds)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--uploads", type=int, default=25)
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--session-ttl", type=int, default=30, help="the server's --session-ttl")
    p.add_argument("--app", default=str(ROOT / "app.py"), help="the app.py to run")
    args = p.parse_args(argv)
    phases = [x for x in args.phases.split(",") if x]
    unknown = set(phases) - {"refresh", "uploads", "sessions", "decode"}
    if unknown:
        p.error(f"unknown phase(s): {', '.join(sorted(unknown))}")

    rows, result, goals = [], {}, {}
    for phase in phases:
        with tempfile.TemporaryDirectory() as folder:
            server = Server(args.app, args.session_ttl, folder)
            print(f"{phase}: server pid {server.pid} on {server.url}, RSS {server.rss():.0f} MB "
                  "after start", flush=True)
            try:
                if phase == "decode":
                    phase_decode(server, args, rows, result, goals, folder)
                else:
                    globals()[f"phase_{phase}"](server, args, rows, result, goals)
            finally:
                server.stop()

    print(f"\nserver: python {Path(args.app).name} --classifier none --session-ttl "
          f"{args.session_ttl} (embedded efficientnet_lite0, CPU); RSS of the server process")
    print("| phase | what | RSS MB | change | goal | | time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    if goals:
        print("GOALS " + " ".join(f"{k}={'met' if ok else 'MISSED'}" for k, ok in goals.items()))
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
