"""Ctrl-C during training gives the prompt back in seconds, with the last finished epoch safe.

Python runs a SIGINT handler only between bytecodes of the main thread, so a KeyboardInterrupt
waits for the running C++ call to return: a whole backward pass of a ResNet-101 at 448 px on a
CPU, then the DataLoader's worker shutdown. Here the signal is noticed at once instead:
signal.set_wakeup_fd makes the C-level handler write the signal number to a pipe that a watcher
thread reads. The watcher waits for a checkpoint save in progress (`saving`, held around the
end-of-epoch writes) to finish, prints the message, stops the DataLoader workers and ends the
process with exit code 130. Every file the run writes is written atomically (csra.atomic), so
nothing half-written is left behind; the epoch in progress is lost, the finished ones are kept.
"""
import multiprocessing
import os
import signal
import sys
import threading

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command


class PromptInterrupt:
    """Context manager for the training loop; `message()` gives the line printed on Ctrl-C."""

    def __init__(self, message):
        self.message = message
        self.saving = threading.Lock()
        self.active = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread() or os.name == "nt":
            return self  # signals reach the main thread only (Windows: a wakeup fd must be a socket);
            # there KeyboardInterrupt does the job, later
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.old_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self.old_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)  # the watcher acts
        self.watcher = threading.Thread(target=self._watch, name="ctrl-c watcher", daemon=True)
        self.watcher.start()
        self.active = True
        return self

    def __exit__(self, *exc):
        if not self.active:
            return False
        signal.set_wakeup_fd(self.old_wakeup)
        signal.signal(signal.SIGINT, self.old_handler)
        os.write(self.write_fd, b"\0")  # wake the watcher: done, no signal
        self.watcher.join()
        os.close(self.read_fd)
        os.close(self.write_fd)
        self.active = False
        return False

    def _watch(self):
        while True:
            received = os.read(self.read_fd, 64)
            if not received or 0 in received:
                return
            if signal.SIGINT in received:
                break
        with self.saving:  # a checkpoint being written is finished first (seconds at most)
            try:
                line = self.message()
            except Exception:  # the message must never keep the prompt away
                line = "interrupted"
            os.write(2, ("\n" + line + "\n").encode(errors="replace"))
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            for child in multiprocessing.active_children():  # DataLoader workers
                child.terminate()
            os._exit(EXIT_CODE)
