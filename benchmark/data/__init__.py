"""Datasets in one prepared on-disk format (format.py); generators and readers write it."""
from benchmark.data.format import DatasetWriter, Manifest, PreparedDataset, open_dataset

__all__ = ["DatasetWriter", "Manifest", "PreparedDataset", "open_dataset"]
