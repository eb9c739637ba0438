"""Training and evaluation of CSRA models (python -m training.train, training.evaluate, ...)."""
import csra  # noqa: F401  (first: it sets PYTORCH_ENABLE_MPS_FALLBACK before torch is imported)
