"""Each browser session's current analysis, kept on the server and found by Gradio's session
hash, so that the page's own upload call (a server function of the scores view) and the
Gradio events that follow it (control changes, model choice, downloads) see the same one.

A session's analysis is dropped when the page is closed (demo.unload), when it has not been
used for `ttl` seconds (checked on every get and put, and by the server's housekeeping:
app/limits.py SessionReaper, so that an idle server holds none either), or when more than
`capacity` sessions hold one (least recently used first).
"""
import threading
import time
from collections import OrderedDict


class Sessions:
    def __init__(self, ttl=3600.0, capacity=256, clock=time.monotonic):
        self.ttl = ttl
        self.capacity = capacity
        self.clock = clock
        self.items = OrderedDict()   # session hash -> (last use, analysis)
        self.lock = threading.Lock()

    def get(self, session):
        """The session's analysis, or None (never had one, dropped, or expired)."""
        with self.lock:
            self.expire()
            item = self.items.get(session)
            if item is None:
                return None
            self.items[session] = (self.clock(), item[1])
            self.items.move_to_end(session)
            return item[1]

    def put(self, session, analysis):
        with self.lock:
            self.items[session] = (self.clock(), analysis)
            self.items.move_to_end(session)
            self.expire()
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)

    def drop(self, session, unused_for=None):
        """Forget the session's analysis; with unused_for (seconds), only if it has not been
        used for that long (one the page's upload call has just made stays)."""
        with self.lock:
            item = self.items.get(session)
            if item is not None and (unused_for is None
                                     or self.clock() - item[0] >= unused_for):
                del self.items[session]

    def sweep(self):
        """Forget every analysis unused for ttl now, not at the next get or put."""
        with self.lock:
            self.expire()

    def expire(self):
        oldest = self.clock() - self.ttl
        while self.items and next(iter(self.items.values()))[0] < oldest:
            self.items.popitem(last=False)

    def __len__(self):
        with self.lock:
            self.expire()
            return len(self.items)
