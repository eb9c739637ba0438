"""Sharing the network between sessions: long work (a map check, a video) holds the one
network lock (app.live.FairGate: first come, first served) one batch at a time."""


class NetworkTurns:
    """A should_stop callable for long work that holds the network lock one batch at a time.

    Each call gives back the lock held for the previous batch (a FairGate hands it to an
    upload already waiting), then stops the work when cancelled() says so, else queues for
    the lock again for the next batch. Call it once before the first batch when the work polls only after each
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
