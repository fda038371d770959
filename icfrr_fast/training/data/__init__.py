"""Data: benchmark layouts -> image records -> datasets, the cross-domain pair sampler, transforms, the toy set."""

from .benchmarks import BENCHMARKS, RetrievalSplits, build_splits
from .file_lists import read_class_ids, read_file_list, write_file_list
from .folders import scan_domain
from .image_list import ImageList, ImageRecords, PairDataset
from .loaders import eval_loader, train_loader
from .sampler import CrossDomainPairSampler
from .toyset import make_toyset
from .transforms import build_transform

__all__ = ["BENCHMARKS", "RetrievalSplits", "build_splits", "read_class_ids", "read_file_list", "write_file_list",
           "scan_domain", "ImageList", "ImageRecords", "PairDataset", "eval_loader", "train_loader",
           "CrossDomainPairSampler", "make_toyset", "build_transform"]
