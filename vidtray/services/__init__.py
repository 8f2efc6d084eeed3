"""Everything that works without a screen. Only worker.py imports torch/diffusers."""
