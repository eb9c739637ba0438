"""Which device to run on: CUDA when present, else Apple's MPS, else the CPU, unless one is named.

Operations MPS lacks fall back to the CPU: csra/__init__.py sets PYTORCH_ENABLE_MPS_FALLBACK=1
(unless the user set it) before torch is imported, which is when torch reads it.
"""
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # cuda:N picks one of several GPUs


class DeviceError(ValueError):
    """A --device the machine does not have, or no device at all; the message is one line."""


def mps_available():
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(name="auto"):
    """'auto' (or None) -> cuda if available, else mps if available, else cpu; 'cpu', 'cuda',
    'cuda:N', 'mps' as named.

    A malformed name, or a GPU the machine does not have, raises DeviceError with a
    message fit for the command line.
    """
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r}: not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: not supported here (use auto, cpu, cuda, cuda:N or mps)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA GPU is available here (use --device cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"numbered from 0")
    if device.type == "mps" and not mps_available():
        raise DeviceError(f"--device {name}: no Apple MPS GPU is available here (use --device cpu or auto)")
    return device


def prepare_for_inference(model, device):
    """Moves the model to `device` in eval mode with channels-last weights; returns it.

    Channels-last is the memory layout oneDNN (CPU) and cuDNN convolutions run
    fastest in; the logits are those of the contiguous model up to float
    rounding. Inputs need no change: a convolution follows its weight's layout.
    """
    return model.to(device=torch.device(device), memory_format=torch.channels_last).eval()
