"""Labelled text for attend: real data sets bundled with the package or fetched on first use."""

from attend.data.datasets import DATASETS, Dataset, DatasetError, DatasetInfo, list_datasets, load_dataset
from attend.data.readers import DataError, LabelledTexts, read_table

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "LabelledTexts",
    "list_datasets",
    "load_dataset",
    "read_table",
]
