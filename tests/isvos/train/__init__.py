"""Tests of isvos.train data and augmentation."""
