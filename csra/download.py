"""Files from the internet, fetched once into torch.hub's cache.

Set CSRA_OFFLINE=1 (or pass offline=True) to forbid downloads: a file that
is not cached then raises DownloadError saying where to put it.
"""
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch

from .atomic import atomic_path
from .errors import one_line

HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


class DownloadError(RuntimeError):
    """A needed file is neither cached nor downloadable."""


def is_offline(offline=None):
    if offline is not None:
        return bool(offline)
    return os.environ.get("CSRA_OFFLINE", "").lower() not in ("", "0", "false", "no")


def cache_path(url):
    """Where torch.hub keeps the file of this URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def fetch(url, what="file", offline=None, progress=True):
    """Local path of url's file, downloading it into torch.hub's cache once.

    A file name with a '-<hex>.' part (torchvision, OpenMMLab) is checked
    against that SHA-256 prefix.
    """
    dest = cache_path(url)
    if dest.is_file():
        return dest
    hint = f"download {url} on a machine with internet and put it at {dest}"
    if is_offline(offline):
        raise DownloadError(f"{what} is not cached and downloads are off (CSRA_OFFLINE): {hint}")
    match = HASH_IN_NAME.search(dest.name)
    try:
        with atomic_path(dest) as tmp:
            torch.hub.download_url_to_file(
                url, str(tmp), hash_prefix=match.group(1) if match else None, progress=progress)
    except (OSError, RuntimeError, ValueError) as err:
        raise DownloadError(f"could not download {what} ({one_line(err)}): {hint}") from None
    return dest
