"""Datasets in the layouts users have them, built offline for the tests: Parquet files, Hub repository
folders of Parquet shards, ``save_to_disk`` folders, and entries of the local Hugging Face datasets cache
(what ``datasets.load_dataset("org/name")`` leaves there after a download)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def dataset(rows: list[dict], features=None):
    import datasets

    return datasets.Dataset.from_list(rows, features=features)


def parquet(path: Path, rows: list[dict], features=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset(rows, features).to_parquet(str(path))
    return path


def hub_folder(root: Path, splits: dict[str, list[dict]], subdir: str = "data", features=None) -> Path:
    """A dataset repository as ``huggingface-cli download`` leaves it: ``README.md`` and one Parquet shard
    per split, ``<subdir>/<split>-00000-of-00001.parquet``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("---\nlicense: mit\n---\n# test dataset\n", encoding="utf-8")
    for split, rows in splits.items():
        parquet(root / subdir / f"{split}-00000-of-00001.parquet", rows, features)
    return root


def cache_hub_dataset(cache: Path, repo: str, splits: dict[str, list[dict]], config: str = "default",
                      features=None) -> Path:
    """Put ``repo`` (config ``config``) into the datasets cache at ``cache`` the way a download prepares it:
    ``<org>___<name>/<config>/0.0.0/<hash>/`` with ``dataset_info.json`` and one Arrow file per split."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    org, name = repo.split("/")
    folder = cache / f"{org}___{name}" / config / "0.0.0" / "0123456789abcdef"
    folder.mkdir(parents=True, exist_ok=True)
    split_dict = datasets.SplitDict(dataset_name=name)
    feats = None
    for split, rows in splits.items():
        ds = dataset(rows, features)
        feats = ds.features
        with ArrowWriter(path=str(folder / f"{name}-{split}.arrow"), features=ds.features) as writer:
            writer.write_table(ds.data.table)
            writer.finalize()
        split_dict.add(datasets.SplitInfo(name=split, num_examples=len(ds), dataset_name=name))
    info = datasets.DatasetInfo(features=feats, config_name=config, dataset_name=name, splits=split_dict)
    info.write_to_directory(str(folder))
    return folder
