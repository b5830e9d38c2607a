"""lmkit: rebuild "Facial Landmarks Detection with ResNet18" as a notebook chain."""

__version__ = "0.2.0"
