"""Data layer: phantom CT generator, dataset layouts and named splits, MONAI transform chains."""

from core.data.phantom import make_phantom_case, write_phantom_dataset

__all__ = ["make_phantom_case", "write_phantom_dataset"]
