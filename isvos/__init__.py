"""ISVOS: "Look Before You Match" video object segmentation (CVPR 2023), implemented from the
paper. ``isvos.processing``, ``isvos.metrics`` and ``isvos.config`` import without torch."""

__version__ = "0.1.0"
