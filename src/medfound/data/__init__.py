"""Image sources (files, folders, CSV lists, DICOM series) and torch Datasets that decode in workers."""

from medfound.data.cubes import CubeDataset
from medfound.data.datasets import ImageDataset, collate_items
from medfound.data.sources import ImageSource, collect_sources

__all__ = ["CubeDataset", "ImageDataset", "ImageSource", "collate_items", "collect_sources"]
