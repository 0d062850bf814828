"""Datasets: embedded procedural phantoms, the generic folder layout, in-memory splits."""

from medbalance.data import phantoms
from medbalance.data.datasets import ArrayDataset, Splits
from medbalance.data.folder import read_folder
from medbalance.data.io import DataError, read_image, read_mask

__all__ = ["phantoms", "ArrayDataset", "Splits", "read_folder", "DataError", "read_image", "read_mask"]
