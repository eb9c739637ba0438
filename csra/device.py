"""Which device to run on: CUDA when present, else the CPU, unless one is named."""
import torch


def pick_device(name="auto"):
    """'auto' (or None) -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:N' as named.

    A malformed name, or CUDA on a machine without it, raises ValueError with a
    message fit for the command line.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available here (use --device cpu or auto)")
    return device
