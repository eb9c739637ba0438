"""Which image files the page may open for a session.

The analysis event takes the image as Gradio's raw file payload (no preprocessing), so the
path in it is whatever the client sent. The page opens only:
- the example photos (the originals, or a file in Gradio's cache with the same bytes: the
  copy Gradio made of one, or a user's upload of it), and
- files that Gradio's upload route received, each for the first session that uses it after
  it was written (the uploader's own change event comes right after its upload), never for
  another session. Gradio names an upload by a keyed hash of its content, so two sessions
  that upload the same photo get the same path; each upload writes a new file there, and
  the session that uses the new file first owns it.

A pasted image sent as a base64 data URL (Gradio's image box, or an API client; no path) is
decoded from memory (data_url_image), limited to the size of an upload (max_bytes) before
anything is decoded.

Everything else — any other path on the disk, a '..' path, a symlink out of the cache, a
file another session uploaded — is refused with the message a missing file gets, so a
caller learns nothing about which files exist.
"""
import base64
import binascii
import hashlib
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

import csra

MAX_CLAIMS = 20_000   # remembered uploads and their sessions; files Gradio deleted go first
MB = 2 ** 20
PASTED = "pasted image"   # the name a pasted picture goes by in messages


def real(path):
    return os.path.realpath(os.fspath(path))


def inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


class UploadGuard:
    """examples: the example files; folder: Gradio's upload folder; received() returns the
    paths its upload route received; max_bytes: the largest picture, uploaded or pasted."""

    def __init__(self, examples, folder, received=lambda: (), max_bytes=20 * MB):
        self.examples = {real(p) for p in examples}
        self.example_digests = {(os.path.getsize(p), digest(p)) for p in self.examples}
        self.folder = real(folder)
        self.received = received
        self.max_bytes = max_bytes
        self.owners = OrderedDict()    # (path, inode, ctime) of an upload -> its session
        self.lock = threading.Lock()

    def path_for(self, path, session, name):
        """The real path of a file this session may open; else csra.ImageError
        '{name}: no such file', whether or not the file exists."""
        given = os.path.abspath(os.fspath(path))
        target = real(given)
        if target in self.examples:
            return target
        if target == given and inside(target, self.folder) and (
                self.is_example_copy(target)
                or (given in self.received() and self.claim(target, session))):
            return target
        raise csra.ImageError(f"{name}: no such file")

    def is_example_copy(self, path):
        try:
            size = os.path.getsize(path)
            return (any(size == s for s, _ in self.example_digests)
                    and (size, digest(path)) in self.example_digests)
        except OSError:
            return False

    def claim(self, target, session):
        """True when the file, as last written, is this session's: the first session to use
        it owns it."""
        try:
            st = os.stat(target)
        except OSError:
            return False
        upload = (target, st.st_ino, st.st_ctime_ns)
        with self.lock:
            owner = self.owners.setdefault(upload, session)
            self.owners.move_to_end(upload)
            if len(self.owners) > MAX_CLAIMS:
                self.forget_deleted()
            return owner == session

    def forget_deleted(self):
        for upload in [u for u in self.owners if not os.path.exists(u[0])]:
            del self.owners[upload]
        while len(self.owners) > MAX_CLAIMS:
            self.owners.popitem(last=False)


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()   # examples: a few hundred KB


def data_url_image(url, max_bytes):
    """The bytes of a base64 data URL as a file object named 'pasted image', limited like
    an upload: its length is checked before decoding, so a huge paste costs no memory.
    csra.ImageError with one line otherwise."""
    head, _, data = url.partition(",")
    if ";base64" not in head:
        raise csra.ImageError(f"{PASTED}: not base64 data")
    if len(data) > 4 * -(-max_bytes // 3) + 4:       # base64 of max_bytes, and padding
        raise csra.ImageError(f"{PASTED}: about {len(data) * 3 / 4 / MB:,.1f} MB, more than "
                              f"the limit of {max_bytes / MB:g} MB")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise csra.ImageError(f"{PASTED}: not valid base64 data") from None
    if len(raw) > max_bytes:
        raise csra.ImageError(f"{PASTED}: {len(raw) / MB:,.1f} MB, more than the limit of "
                              f"{max_bytes / MB:g} MB")
    source = io.BytesIO(raw)
    source.name = PASTED
    return source
