"""Training (spec §1.12 losses, §1.13 recipe): data, losses, the training wrapper and loop."""
