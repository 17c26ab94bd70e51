"""Structure from motion from a folder of images: pairs, features and matches in hloc's h5 layout,
a COLMAP model through pycolmap, on one machine or on a Ray cluster. See `pipeline.py`."""

from .pipeline import Options, Reconstruction, reconstruct

__all__ = ["Options", "Reconstruction", "reconstruct"]
