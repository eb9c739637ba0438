"""argparse types for the command lines: a bad value is one usage line (exit 2), never a traceback.

    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--threshold", type=fraction)
"""
import argparse
import math

LAM_MAX = 10.0  # the paper's lambdas are 0.02-1; far larger ones only push scores to 0 or 1
MIN_IMAGE_SIZE = 32  # the backbones' stride: a smaller image gives no score map
MAX_IMAGE_SIZE = 2048  # 4.6x the papers' 448 px; one 100000 px image would need 120 GB before the network
MAX_WORKERS = 64  # data-loading processes; more only add memory and start-up time
MAX_SEED = 2 ** 32 - 1  # numpy's seed range


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number")
    return value


def _within(kind, low, words, high=math.inf, strict=False):
    """An argparse type: a finite number of `kind` >= low (> low if strict) and <= high, else
    "VALUE: must be WORDS"."""
    def check(text):
        value = _number(text, kind)
        if value < low or (strict and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"{value:g}: must be {words}")
        return value
    return check


positive_int = _within(int, 1, "at least 1")
nonnegative_int = _within(int, 0, "0 or more")
image_size = _within(int, MIN_IMAGE_SIZE, f"{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels", MAX_IMAGE_SIZE)
workers = _within(int, 0, f"0 to {MAX_WORKERS} processes", MAX_WORKERS)
seed = _within(int, 0, f"0 to {MAX_SEED} (2**32 - 1)", MAX_SEED)
positive_float = _within(float, 0, "greater than 0", strict=True)
nonnegative_float = _within(float, 0, "0 or more")


def fraction(text):
    """A number in [0, 1] (a score threshold)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g}: must be between 0 and 1")
    return value


def area_fraction(text):
    """A number in (0, 1] (a share of the image area)."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g}: must be greater than 0 and at most 1")
    return value


def lam(text):
    """A CSRA lambda: finite, 0 to LAM_MAX."""
    value = _number(text, float)
    if not 0 <= value <= LAM_MAX:
        raise argparse.ArgumentTypeError(f"{value:g}: lambda must be between 0 and {LAM_MAX:g}")
    return value
