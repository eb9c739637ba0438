"""Files written whole or not at all: write a temporary file beside the target, then rename."""
import contextlib
import os
import re
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffix); rename it onto `path` if the block ends
    normally. The temporary file is removed in every case, so a crash or Ctrl-C leaves the old
    file (or none) in place, never half a new one. A process killed outright (SIGKILL, power
    loss) cannot remove its temporary file: the next save of the same target removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path):
    """Delete .<stem>.<pid>.tmp<suffix> files beside `path` whose process no longer runs."""
    pattern = re.compile(rf"^\.{re.escape(path.stem)}\.(\d+)\.tmp{re.escape(path.suffix)}$")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        found = pattern.match(name)
        if found and not process_alive(int(found.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(path.parent / name)


def process_alive(pid):
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would send Ctrl-C
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or cannot tell: keep its file
    return True
