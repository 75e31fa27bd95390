"""Labelled text for attend: real data sets bundled with the package or fetched on first use."""

from attend.data.datasets import DATASETS, Dataset, DatasetError, DatasetInfo, list_datasets, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetInfo", "list_datasets", "load_dataset"]
