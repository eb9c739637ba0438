"""Video files: a score for every class in every (N-th) frame, and an overlay video of the top classes.

    from csra.video import predict_video, VideoError
    result = predict_video(model, "clip.mp4", out_csv="scores.csv", out_video="overlay.mp4", every=2)
    result.frames[0].frame, result.frames[0].time, result.frames[0].scores   # 0, 0.0, (classes,)

Frames are read with cv2.VideoCapture by a decoding thread, converted BGR -> RGB and put
through the model's own preprocessing (the one csra.load_image's images get), in batches, into
a bounded queue. The batches go through csra.inference.score_map_batches, the one
batch-inference loop. The overlay frames are drawn with csra.visualize (the CLI's heatmap
colouring) and written with cv2.VideoWriter by a second thread, so decoding and encoding run
while the network works. Bad input raises VideoError, one line naming the file.
"""
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

# FFmpeg's own console messages off (every failure is a VideoError instead); OpenCV reads this
# when it first uses FFmpeg, so before any video is opened. A user's own setting is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

import cv2  # noqa: E402
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .atomic import remove_stale_temporaries
from .device import prepare_for_inference
from .inference import IMAGE_EXTENSIONS, score_map_batches
from .preprocess import video_format
from .visualize import overlay, value_range

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".ogv", ".3gp")
# Overlay containers and the codec written into each: ones OpenCV's pip wheels write and read back.
# .webm (VP8) is the one a browser plays too (the page's video tab writes it).
OVERLAY_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG",
                  ".webm": "VP80"}
MAX_SECONDS = 600.0  # longer videos are refused unless the limit is raised (--max-seconds)
QUEUE_BATCHES = 2  # decoded batches waiting for the network; bounds memory
LIMIT_HINT = "raise it with --max-seconds, or max_seconds= in Python"


class VideoError(ValueError):
    """A video that cannot be used (or a still image given as one); the message is one line
    that names the file."""


@dataclass
class FrameScores:
    frame: int  # index in the video, from 0
    time: float  # seconds from the start: frame / fps
    scores: np.ndarray  # (num_classes,) float32: model.scores (sigmoid, or softmax for a classifier)


@dataclass
class VideoInfo:
    path: Path
    fps: float
    width: int
    height: int
    frame_count: int  # as the file's header says (0 when it does not say)

    @property
    def seconds(self):
        return self.frame_count / self.fps


@dataclass
class VideoPrediction:
    info: VideoInfo
    class_names: list
    frames: list = field(default_factory=list)  # FrameScores of the predicted frames, in order
    frames_read: int = 0  # frames decoded (predicted or skipped by `every`)
    stopped: bool = False  # should_stop() ended the run early
    incomplete: str = None  # why decoding ended well before the header's frame count, else None

    @property
    def scores(self):
        """(frames, classes) array."""
        return np.stack([f.scores for f in self.frames]) if self.frames else \
            np.zeros((0, len(self.class_names)), np.float32)

    @property
    def times(self):
        return np.array([f.time for f in self.frames])


# ---------------------------------------------------------------- what a file holds

def image_format(path):
    """The still-image format Pillow finds in a file ('JPEG', 'PNG', ...), or None."""
    if video_format(path):
        return None  # Pillow 'identifies' MPEG video too, but cannot read it
    try:
        with Image.open(path) as image:
            return image.format or "image"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def sort_inputs(files):
    """(images, videos, problems) for the command line: a file goes by its extension (a video
    extension or not); one whose content is the other kind is a problem, (path, one-line
    message), not guessed at. A file with neither kind of extension goes by its content."""
    images, videos, problems = [], [], []
    for path in map(Path, files):
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            still = image_format(path)
            if still:
                problems.append((path, still_image_message(path, still)))
            else:
                videos.append(path)
        elif video_format(path):
            if suffix in IMAGE_EXTENSIONS:
                problems.append((path, f"{path}: a video ({video_format(path)}), not a still image; "
                                       f"give it a video's name ({VIDEO_EXTENSIONS[0]}, ...) to predict its frames"))
            else:
                videos.append(path)
        else:
            images.append(path)
    return images, videos, problems


def still_image_message(path, fmt):
    return f"{path}: a still image ({fmt}), not a video"


# ---------------------------------------------------------------- opening

def check_limit(max_seconds):
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a number > 0 or None, got {max_seconds!r}")


def quiet_opencv():
    """OpenCV's own console messages off (as FFmpeg's, above), unless OPENCV_LOG_LEVEL is set."""
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def cv2_name(path):
    """str(path) for OpenCV, or VideoError: OpenCV 5.0 crashes the process on a name with bytes
    that are not UTF-8 (Python's surrogate escapes)."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise VideoError(f"{path}: OpenCV cannot open a file whose name is not valid UTF-8; "
                         f"rename it") from None
    return name


def capture_of(path):
    """cv2.VideoCapture of a file through FFmpeg (never an image-sequence pattern: a '%' in a
    name stays a '%'), opened, or VideoError."""
    name = cv2_name(path)
    try:
        capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG)
    except (cv2.error, UnicodeError, SystemError) as err:
        raise VideoError(f"{path}: cannot open as a video ({err})") from None
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot open as a video (corrupt, no frames, or a codec "
                         f"OpenCV's FFmpeg cannot decode)")
    return capture


def open_video(path, max_seconds=MAX_SECONDS):
    """(cv2.VideoCapture, VideoInfo) of a readable video no longer than max_seconds (None: any
    length), or VideoError."""
    path = Path(path)
    check_limit(max_seconds)
    quiet_opencv()
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video")
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file, not a video")
    still = image_format(path)
    if still:
        raise VideoError(still_image_message(path, still))
    capture = capture_of(path)
    if not capture.grab():  # opens, yet not one frame decodes: reopen to read from the start
        capture.release()
        raise VideoError(f"{path}: no frame could be decoded (no frames, corrupt, or a codec "
                         f"OpenCV's FFmpeg cannot decode)")
    capture.release()
    capture = capture_of(path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    info = VideoInfo(path, fps, int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     int(count) if math.isfinite(count) and count > 0 else 0)
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        capture.release()
        raise VideoError(f"{path}: no usable frame rate in the file ({fps:g} frames/s)")
    if max_seconds is not None and info.seconds > max_seconds:
        capture.release()
        raise VideoError(f"{path}: {info.seconds:.1f} s long, over the limit of {max_seconds:g} s ({LIMIT_HINT})")
    return capture, info


def overlay_codec(out_video):
    """The fourcc written into `out_video`, by its extension; VideoError for one OpenCV cannot write."""
    suffix = Path(out_video).suffix.lower()
    if suffix not in OVERLAY_CODECS:
        raise VideoError(f"{out_video}: cannot write this kind of video; name it "
                         f"{', '.join(OVERLAY_CODECS)} (mp4v codec; MJPG in .avi)")
    return OVERLAY_CODECS[suffix]


# ---------------------------------------------------------------- the run

_END = object()


def _put(q, item, stop):
    """q.put that gives up when `stop` is set (the reader has gone)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class VideoRun:
    """One video through the model: iterate for FrameScores (frame order). Constructing it opens
    the file (VideoError if it cannot be used); .info is then known, .frames_read, .stopped and
    .incomplete once the iteration ends. Arguments as predict_video's."""

    def __init__(self, model, path, out_video=None, every=1, batch_size=8, max_seconds=MAX_SECONDS,
                 lam=None, top_k=3, alpha=0.5, device=None, progress=None, should_stop=None):
        for name, value, low in (("every", every, 1), ("batch_size", batch_size, 1), ("top_k", top_k, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
        self.codec = overlay_codec(out_video) if out_video is not None else None
        if out_video is not None:
            cv2_name(out_video)
        self.capture, self.info = open_video(path, max_seconds)
        self.model, self.path, self.out_video = model, Path(path), out_video
        self.every, self.batch_size, self.max_seconds = every, batch_size, max_seconds
        self.lam, self.top_k, self.alpha = lam, top_k, alpha
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.progress, self.should_stop = progress, should_stop
        self.frames_read, self.stopped, self.incomplete = 0, False, None
        self.expected = math.ceil(self.info.frame_count / every) if self.info.frame_count else 0

    # -- decoding thread: frames -> preprocessed batches

    def _decode(self, batches, stop):
        preprocessing = self.model.preprocessing
        keep = self.out_video is not None and self.every == 1  # the writer needs these frames
        indices, tensors, frames, i = [], [], [], 0
        try:
            while not stop.is_set():
                sampled = i % self.every == 0
                ok, bgr = self.capture.read() if sampled else (self.capture.grab(), None)
                if not ok:
                    break
                self.frames_read = i + 1
                if self.max_seconds is not None and i / self.info.fps > self.max_seconds:
                    raise VideoError(f"{self.path}: longer than the limit of {self.max_seconds:g} s "
                                     f"(its header did not say; {LIMIT_HINT})")
                if sampled:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    tensors.append(preprocessing(Image.fromarray(rgb)))
                    indices.append(i)
                    frames.append(rgb if keep else None)
                    if len(indices) == self.batch_size:
                        if not _put(batches, (torch.stack(tensors), (indices, frames)), stop):
                            return
                        indices, tensors, frames = [], [], []
                i += 1
            if indices and not _put(batches, (torch.stack(tensors), (indices, frames)), stop):
                return
            _put(batches, _END, stop)
        except BaseException as err:  # handed to the reading thread, which raises it
            _put(batches, err, stop)

    @staticmethod
    def _drain(batches, stop):
        while True:
            try:
                item = batches.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():  # the writer failed
                    return
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- writing thread: predicted frames -> overlay video

    def _write(self, tmp, jobs, stop, failed):
        writer, source = None, None
        try:
            if self.every > 1:  # the frames between sampled ones are decoded again here
                source = capture_of(self.path)
            while True:
                try:
                    job = jobs.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():  # abandoned: the run failed
                        return
                    continue
                if job is None:
                    return
                rgb, classes, scores, heat, vmin, vmax = job
                if source is None:
                    span = [rgb]
                else:
                    span = []
                    for _ in range(self.every):
                        ok, bgr = source.read()
                        if not ok:
                            break
                        span.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                for picture in span:
                    if writer is None:
                        h, w = picture.shape[:2]
                        writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*self.codec),
                                                 self.info.fps, (w, h))
                        if not writer.isOpened():
                            raise VideoError(f"{self.out_video}: OpenCV cannot write a video there")
                    picture = overlay(picture, heat, vmin, vmax, self.alpha)
                    draw_labels(picture, [f"{self.model.class_names[c]} {s:.2f}" for c, s in zip(classes, scores)])
                    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        except BaseException as err:
            failed.append(err)
            stop.set()  # the predicting thread's puts give up
        finally:
            if writer is not None:
                writer.release()
            if source is not None:
                source.release()

    def _write_error(self, failed):
        err = failed[0] if failed else RuntimeError("the writing thread stopped")
        if isinstance(err, VideoError):
            return err
        from .errors import one_line
        return VideoError(f"{self.out_video}: cannot write the overlay video ({one_line(err)})")

    def _overlay_job(self, rgb, scores, maps):
        """What the writer needs for one predicted frame: the top_k classes and their scores, the
        heat map (the largest of their score maps at each cell), on the frame's global range."""
        classes = np.argsort(-scores, kind="stable")[: self.top_k]
        vmin, vmax = value_range(maps, scale="global")
        heat = maps[classes].max(axis=0)
        return rgb, classes, scores[classes], heat, vmin[0], vmax[0]

    def __iter__(self):
        if self.capture is None:
            raise RuntimeError(f"{self.path}: a VideoRun runs once; make a new one")
        model = prepare_for_inference(self.model, self.device)
        # OpenCV's own thread pool (colour conversion, resizing, encoding in the decoding and
        # writing threads) on top of torch's threads oversubscribed a 2-core CPU: the overlay
        # video ran at 0.71x the forward-only rate, 0.94x with one OpenCV thread
        # (bench/predict_throughput.py). Restored when the run ends.
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        stop = threading.Event()
        batches = queue.Queue(maxsize=QUEUE_BATCHES)
        decoder = threading.Thread(target=self._decode, args=(batches, stop), daemon=True, name="csra-decode")
        writer = tmp = None
        failed = []
        if self.out_video is not None:
            out = Path(self.out_video)
            remove_stale_temporaries(out)
            tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
            jobs = queue.Queue(maxsize=2 * self.batch_size)
            writer = threading.Thread(target=self._write, args=(tmp, jobs, stop, failed), daemon=True,
                                      name="csra-encode")
            writer.start()
        bar = None
        if self.progress is True:
            bar = tqdm(total=self.expected or None, unit="frame", desc=self.path.name, leave=False)
        keep = False
        decoder.start()
        try:
            done = 0
            for batch in score_map_batches(model, self._drain(batches, stop), self.device):
                indices, frames = batch.extra[0]
                scores = model.scores(batch.logits(self.lam)).float().cpu().numpy()
                maps = batch.class_maps().cpu().numpy() if writer is not None else None
                for row, i in enumerate(indices):
                    if writer is not None:
                        if failed or not _put(jobs, self._overlay_job(frames[row], scores[row], maps[row]), stop):
                            raise self._write_error(failed)
                    yield FrameScores(i, i / self.info.fps, scores[row])
                done += len(indices)
                if bar is not None:
                    bar.update(len(indices))
                elif callable(self.progress):
                    self.progress(done, self.expected)
                if self.should_stop is not None and self.should_stop():
                    self.stopped = True
                    break
            keep = True
        except (GeneratorExit, KeyboardInterrupt):
            keep = True  # stopped by the caller: the overlay keeps the frames so far
            raise
        finally:
            if bar is not None:
                bar.close()
            if writer is not None and keep and not failed:
                _put(jobs, None, stop)  # the end: the writer finishes the frames it has
                writer.join()
            stop.set()  # the decoder, and the writer after an error, give up
            if writer is not None:
                writer.join(timeout=10)
            decoder.join(timeout=10)
            cv2.setNumThreads(cv_threads)
            self.capture.release()
            self.capture = None
            if tmp is not None:
                if keep and not failed and tmp.exists():
                    os.replace(tmp, self.out_video)
                tmp.unlink(missing_ok=True)
        if failed:
            raise self._write_error(failed)
        if self.info.frame_count and not self.stopped and self.frames_read < 0.9 * self.info.frame_count - 1:
            self.incomplete = (f"{self.path}: decoding stopped at frame {self.frames_read} of the "
                               f"{self.info.frame_count} its header announces (corrupt or truncated?)")


def draw_labels(picture, lines):
    """Write `lines` in the picture's top-left corner, white on a darkened band, sized to the frame."""
    h, w = picture.shape[:2]
    scale = max(0.4, min(h, w) / 720)
    thickness = 1 if scale < 0.8 else 2
    sizes = [cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0] for text in lines]
    pad, step = max(3, int(6 * scale)), max(th for _, th in sizes) + max(4, int(10 * scale))
    box = picture[:min(h, pad + step * len(lines)), :min(w, 2 * pad + max(tw for tw, _ in sizes))]
    box[:] = box // 2  # darker, so white text reads on any heat colour
    for k, text in enumerate(lines):
        cv2.putText(picture, text, (pad, pad + step * k + sizes[k][1]), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)


# ---------------------------------------------------------------- the entry point

def predict_video(model, path, out_csv=None, out_video=None, every=1, batch_size=8, max_seconds=MAX_SECONDS,
                  lam=None, top_k=3, alpha=0.5, device=None, progress=None, should_stop=None):
    """Scores of every `every`-th frame of the video at `path`; see docs/library.md#videos.

    out_csv: write frame,time_s,<class>... there. out_video: write the frames with the heat map
    of their top_k classes over them (alpha: its weight) and those classes' scores in the corner,
    same size and frame rate as the input (.mp4/.m4v/.mov/.mkv: mp4v; .avi: MJPG); with every > 1
    a frame shows the last predicted frame's classes. lam: CSRA lambda (default: the model's).
    device: default the model's. progress: True (a tqdm bar) or a callable(done, total) after
    each batch (total 0 when the header gives no frame count). should_stop: a callable polled
    after each batch; True ends the run, keeping what was done. Returns a VideoPrediction;
    raises VideoError (one line naming the file) for a video that cannot be used.
    """
    run = VideoRun(model, path, out_video, every, batch_size, max_seconds, lam, top_k, alpha, device,
                   progress, should_stop)
    frames = list(run)
    if out_csv is not None:
        write_frames_csv(out_csv, frames, model.class_names)
    return VideoPrediction(run.info, list(model.class_names), frames, run.frames_read, run.stopped, run.incomplete)


def write_frames_csv(path, frames, class_names):
    """frame,time_s,<one column per class>: a row per predicted frame (6 decimals)."""
    import csv

    from .atomic import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "time_s", *class_names])
        for fr in frames:
            writer.writerow([fr.frame, f"{fr.time:.6f}", *(f"{s:.6f}" for s in fr.scores)])
