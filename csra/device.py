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


def prepare_for_inference(model, device):
    """Moves the model to `device` in eval mode with channels-last weights; returns it.

    Channels-last is the memory layout oneDNN (CPU) and cuDNN convolutions run
    fastest in; the logits are those of the contiguous model up to float
    rounding. Inputs need no change: a convolution follows its weight's layout.
    """
    return model.to(device=torch.device(device), memory_format=torch.channels_last).eval()
