"""Downloads: the scores as CSV and JSON, the overlays as PNG files in a zip."""
import csv
import io
import json
import shutil
import tempfile
import threading
import zipfile
from collections import deque
from pathlib import Path

import cv2

from csra.inference import safe_stem

from .inference import score_rows, threshold_logit

SCORE_COLUMNS = ("class", "probability", "logit", "base", "lambda_attention", "present")


def scores_csv(analysis, scores, threshold):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SCORE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(score_rows(analysis, scores, threshold))
    return out.getvalue()


def scores_json(analysis, scores, threshold, model_info=None):
    rows = score_rows(analysis, scores, threshold)
    payload = {
        "image": analysis.name,
        "model": model_info or {},
        "lambda": scores.lam,
        "threshold": threshold,
        "probability": scores.kind,
        "threshold_logit": threshold_logit(threshold, scores.kind),
        "score_map_grid": list(analysis.grid),
        "temperatures": list(analysis.temperatures),
        "present": [r["class"] for r in rows if r["present"]],
        "classes": rows,
    }
    return json.dumps(payload, indent=2)


def png_bytes(rgb):
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("could not encode PNG")
    return buf.tobytes()


def overlays_zip(pictures):
    """[(RGB uint8 picture, file stem)] -> zip archive bytes of PNG files."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for i, (picture, stem) in enumerate(pictures):
            archive.writestr(f"{i:02d}_{safe_stem(stem)}.png", png_bytes(picture))
    return out.getvalue()


class DownloadFolders:
    """Short-lived folders for download files; only the newest `keep` folders stay on disk,
    so serving many requests does not fill the disk (Gradio copies what it serves)."""

    def __init__(self, keep=32, root=None):
        self.root = Path(root or tempfile.mkdtemp(prefix="csra-app-downloads-"))
        self.keep = keep
        self._folders = deque()
        self._lock = threading.Lock()

    def new(self):
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self._lock:
            self._folders.append(folder)
            while len(self._folders) > self.keep:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return folder

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def write_downloads(folder, analysis, scores, threshold, pictures, model_info=None):
    """scores.csv, scores.json and overlays.zip for one image into folder; returns their paths."""
    stem = safe_stem(Path(analysis.name).stem)
    folder = Path(folder)
    paths = [folder / f"{stem}_scores.csv", folder / f"{stem}_scores.json",
             folder / f"{stem}_overlays.zip"]
    paths[0].write_text(scores_csv(analysis, scores, threshold))
    paths[1].write_text(scores_json(analysis, scores, threshold, model_info))
    paths[2].write_bytes(overlays_zip(pictures))
    return [str(p) for p in paths]
