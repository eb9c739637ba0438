"""The live camera tab, without Gradio: one camera frame in, the frame with a heatmap out.

The page's script (app/explorer.js, mountLive) takes frames from getUserMedia into a
canvas, downscaled to frame_side(model) (never below the model's own input size, which
its preprocessing would squash the frame to anyway), and sends one at a time as a JPEG
to a server function of the tab (app/ui.py, live_frame -> LiveService.frame). It sends
the next frame only when the answer to the previous one is on screen, and then the
newest one the camera has: at most one frame in flight per page, none queued.

On the server:

- FairGate is the page's one network lock (uploads, examples, model changes and live
  frames): first come, first served, one frame per acquisition, so a camera that sends
  its next frame at once waits behind an upload that is already waiting, and other
  sessions' uploads are served while cameras stream. A waiting frame is replaced by a
  newer frame of the same session (it keeps its place in line; the older call answers
  {"replaced": true}): at most one waiting frame per session.
- Streams holds each stream's start; a stream runs at most TIME_LIMIT_S seconds, then
  its frames are answered {"stop": TIME_LIMIT_TEXT} and the page stops the camera.
- process_frame: the network runs once on the frame (app.inference.score_maps, the same
  code as an upload), the lock is released, then the scores at the page's lambda, the
  present classes at its threshold, and one overlay: the heatmap of the top class, or of
  the classes picked by hand, blended in at the page's opacity on its colour scale.

A live frame never becomes the session's upload analysis (app/sessions.py is not
touched): the other tabs keep showing the uploaded image.
"""
import base64
import binascii
import io
import threading
import time
from collections import OrderedDict, deque

import cv2
import numpy as np

import csra
from csra import visualize

from . import page, render
from .inference import analysis_from_maps, score_maps, scores_at, shown_classes
from .models import VOC, ModelUnavailable

TIME_LIMIT_S = 300                 # one stream runs at most 5 minutes, then Start again
TIME_LIMIT_TEXT = ("Live camera stopped: a stream runs at most 5 minutes. "
                   "Press Start camera to go on.")
MIN_FRAME_SIDE = 320               # longest side of the frames the page sends, at least
MAX_FRAME_CHARS = 4_000_000        # a frame's data URL (about 3 MB of JPEG)
MAX_FRAME_PIXELS = 4096 * 4096
MAX_PRESENT = page.MAX_HEATMAPS    # present classes listed per frame
JPEG_QUALITY = 80                  # the overlay sent back
WAIT_S = 30.0                      # a frame waits this long for the network at most


class LiveError(ValueError):
    """A frame or request the live tab cannot use (one line for the page)."""


class TimeUp(Exception):
    """The stream ran out of its time (TIME_LIMIT_S)."""


def frame_side(model):
    """Longest side of the frames the page should send for this model: the model squashes
    every picture to image_size x image_size, so a 4:3 frame whose shorter side is
    image_size keeps all the detail the network sees (and at least MIN_FRAME_SIDE, for
    the picture shown)."""
    return max(MIN_FRAME_SIDE, round(model.config.image_size * 4 / 3))


class _Waiter:
    __slots__ = ("key", "event", "granted")

    def __init__(self, key):
        self.key = key
        self.event = threading.Event()
        self.granted = None        # True: holds the lock; False: replaced or timed out


class FairGate:
    """The network lock: `value` holders at a time, granted in order of arrival.

    release() hands the slot straight to the longest waiter, so a caller that comes back
    at once (a camera's next frame) cannot overtake one that is already waiting, as it can
    with threading.Semaphore. acquire(key=...) keeps at most one waiter per key: a newer
    one takes the older one's place in line and the older acquire() returns False.
    `with gate:` acquires without a key (an upload) and always gets its turn."""

    def __init__(self, value=1):
        self._lock = threading.Lock()
        self._free = value
        self._waiters = deque()

    def acquire(self, key=None, timeout=None):
        """True once the caller holds the lock; False when a newer waiter with the same key
        replaced it, or after timeout seconds."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            waiter = _Waiter(key)
            for i, other in enumerate(self._waiters):
                if key is not None and other.key == key:
                    self._waiters[i] = waiter          # the newest keeps the older one's place
                    other.granted = False
                    other.event.set()
                    break
            else:
                self._waiters.append(waiter)
        if not waiter.event.wait(timeout):
            with self._lock:
                if waiter.granted is None:             # not handed the lock meanwhile
                    self._waiters.remove(waiter)
                    waiter.granted = False
        return waiter.granted

    def release(self):
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                waiter.event.set()
            else:
                self._free += 1

    def waiting(self):
        """Keys of the callers waiting, in order (None for keyless ones)."""
        with self._lock:
            return [w.key for w in self._waiters]

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class Streams:
    """When each live stream (session, stream id) started; TimeUp once it ran limit seconds.

    Entries older than twice the limit are forgotten, and at most `capacity` are kept."""

    def __init__(self, limit=TIME_LIMIT_S, clock=time.monotonic, capacity=1024):
        self.limit = limit
        self.clock = clock
        self.capacity = capacity
        self.started = OrderedDict()
        self.lock = threading.Lock()

    def left(self, session, stream):
        """Seconds this stream has left (its first frame starts its clock), or TimeUp."""
        now = self.clock()
        key = (session, stream)
        with self.lock:
            while self.started and next(iter(self.started.values())) < now - 2 * self.limit:
                self.started.popitem(last=False)
            start = self.started.setdefault(key, now)
            while len(self.started) > self.capacity:
                self.started.popitem(last=False)
        left = self.limit - (now - start)
        if left <= 0:
            raise TimeUp(TIME_LIMIT_TEXT)
        return left

    def stop(self, session, stream):
        with self.lock:
            self.started.pop((session, stream), None)


def decode_frame(data_url, max_chars=MAX_FRAME_CHARS, max_pixels=MAX_FRAME_PIXELS):
    """A frame as the page sends it ('data:image/jpeg;base64,...') -> RGB PIL image."""
    if not isinstance(data_url, str) or not data_url:
        raise LiveError("camera frame: no picture in the request")
    if len(data_url) > max_chars:
        raise LiveError(f"camera frame: more than {max_chars:,} characters")
    try:
        data = base64.b64decode(data_url.partition(",")[2] if data_url.startswith("data:")
                                else data_url, validate=False)
    except (binascii.Error, ValueError):
        raise LiveError("camera frame: not valid base64 data") from None
    source = io.BytesIO(data)
    source.name = "camera frame"
    return csra.load_image(source, max_pixels=max_pixels)


def overlay(image, maps, classes, lo, hi, alpha=0.5):
    """The classes' score maps over the image: each map turned into colour indices on its
    own range (lo[c]..hi[c]), the largest index per position kept, upsampled, coloured and
    blended. For one class this is exactly csra.visualize.overlay(image, maps[c], lo[c],
    hi[c], alpha) (tests/test_app_live.py checks it)."""
    image = np.asarray(image)
    index = None
    for c in classes:
        i = visualize.colour_index(maps[c], lo[c], hi[c])
        index = i if index is None else np.maximum(index, i)
    index = cv2.resize(index, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(cv2.convertScaleAbs(index), visualize.RGB_LUT)
    return visualize.blend(image, heat, alpha)


def describe(model, maps, frame, controls):
    """What the page shows for one frame, from its score maps (no network run): the overlay
    (RGB array) and a JSON-ready dict of the scores. controls: clean page.Controls."""
    c = controls
    analysis = analysis_from_maps(model, maps, frame)
    scores = scores_at(analysis, c.lam)
    names = analysis.class_names
    index = {n: i for i, n in enumerate(names)}
    picked = [index[n] for n in c.picked if n in index]
    top = int(scores.order()[0])
    drawn = picked or [top]
    lo, hi = render.colour_ranges(analysis.class_maps, c.scale)
    picture = overlay(frame, analysis.class_maps, drawn, lo, hi, c.alpha)
    present = shown_classes(scores, c.threshold, (), MAX_PRESENT)
    p = scores.probabilities
    return picture, {
        "drawn": [names[i] for i in drawn],
        "present": [[names[i], round(float(p[i]), 4)] for i in present],
        "top": [names[top], round(float(p[top]), 4)],
        "kind": analysis.kind, "lam": c.lam, "threshold": c.threshold,
    }


def process_frame(model, image, controls, gate=None, key=None, timeout=WAIT_S):
    """One frame: the network under the gate (None: no lock), then the overlay and scores.
    -> (overlay RGB array, dict with "forward_ms"), or None when a newer frame with the same
    key replaced this one while it waited (or it waited timeout seconds)."""
    if gate is not None and not gate.acquire(key=key, timeout=timeout):
        return None
    try:
        start = time.perf_counter()
        maps = score_maps(model, image)
        forward_ms = 1000 * (time.perf_counter() - start)
    finally:
        if gate is not None:
            gate.release()
    picture, out = describe(model, maps, np.asarray(image), controls)
    out["forward_ms"] = round(forward_ms, 1)
    return picture, out


class LiveService:
    """The tab's server function, as plain Python: frame(data) -> a JSON-ready dict.

    data: {"frame": JPEG data URL, "session": Gradio's session hash, "stream": the page's
    id for this stream, "model": label or key, "lam", "threshold", "alpha", "scale",
    "picked"}. The answer is one of
      {"overlay": JPEG data URI, "drawn", "present", "top", "kind", "lam", "threshold",
       "forward_ms", "handler_ms", "side", "left_s"}   a processed frame
      {"replaced": true}    a newer frame of this session took this one's place in line
      {"stop": message}     the stream's time is up
      {"error": message}    one line for the page (bad frame, bad control, model unavailable)
    """

    def __init__(self, store, gate, time_limit=TIME_LIMIT_S, clock=time.monotonic):
        self.store = store
        self.gate = gate
        self.streams = Streams(time_limit, clock)

    def frame(self, data):
        start = time.perf_counter()
        try:
            if not isinstance(data, dict):
                raise LiveError("the page is out of date: reload it")
            session, stream = data.get("session"), data.get("stream")
            if not isinstance(session, str) or not session or not isinstance(stream, str) \
                    or not stream:
                raise LiveError("the page is out of date: reload it")
            left = self.streams.left(session, stream)
            c = page.Controls(data.get("lam"), data.get("threshold"), 20, data.get("alpha", 0.5),
                              data.get("scale", "global"), data.get("picked") or (), None).clean()
            try:
                key = self.store.key_for(data.get("model") or VOC)
            except KeyError:
                raise LiveError(f"unknown model {data.get('model')!r}: reload the page") from None
            model = self.store.get(key)
            image = decode_frame(data.get("frame"))
            done = process_frame(model, image, c, self.gate, key=session)
        except TimeUp as err:
            self.streams.stop(session, stream)
            return {"stop": str(err)}
        except (LiveError, csra.ImageError, page.BadControl, ModelUnavailable) as err:
            return {"error": str(err)}
        if done is None:
            return {"replaced": True}
        picture, out = done
        out["overlay"] = render.data_uri(picture, JPEG_QUALITY)
        out["side"] = frame_side(model)
        out["left_s"] = round(left, 1)
        out["handler_ms"] = round(1000 * (time.perf_counter() - start), 1)
        return out
