"""Sharing the network between sessions: one lock for every run (uploads, checks, videos),
and NetworkTurns, which lets long work (a map check, a video) hold it one batch at a time."""
import time


class NetworkTurns:
    """A should_stop callable for long work that holds the network lock one batch at a time.

    Each call gives back the lock held for the previous batch (with a moment for an upload
    that waits on it), then stops the work when cancelled() says so, else takes the lock for
    the next batch. Call it once before the first batch when the work polls only after each
    batch, and release() at the end."""

    def __init__(self, lock, cancelled=lambda: False):
        self.lock = lock
        self.cancelled = cancelled
        self.held = False

    def __call__(self):
        self.release()
        if self.cancelled():
            return True
        self.lock.acquire()
        self.held = True
        return False

    def release(self):
        if self.held:
            self.held = False
            self.lock.release()
            time.sleep(0.002)    # a waiting upload gets its turn before the next batch
