"""A torch Dataset over one split of a task, and the collate function that pads a batch.

Each item is a whole sample as one tensor: fine for training lengths (the report trains on up to
7 segments). For millions of tokens, stream with `Sample.segments` / `iter_batch_segments`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from rmt_lab.config import ConfigError
from rmt_lab.tasks.sample import TaskGenerator

PAD_ID = 0  # [PAD] of the uncased WordPiece vocabulary


class TaskDataset(Dataset):
    """Samples `start .. start + size - 1` of `split`, made on demand (nothing is stored)."""

    def __init__(self, generator: TaskGenerator, split: str, size: int, start: int = 0):
        if size < 0 or start < 0:
            raise ConfigError(f"TaskDataset size={size} and start={start} must be non-negative")
        self.generator, self.split, self.size, self.start = generator, split, size, start

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for a dataset of {self.size} samples")
        sample = self.generator.sample(self.split, self.start + i)
        return {
            "input_ids": sample.tokens(),  # (n_tokens,)
            "label": sample.label,
            "answer": sample.answer,
            "index": sample.index,
        }


def collate(items: Sequence[dict], pad_id: int = PAD_ID) -> dict:
    """Stack items into a batch, right-padding input_ids with `pad_id` to the longest."""
    longest = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), longest), pad_id, dtype=torch.long)  # (batch, longest)
    attention_mask = torch.zeros((len(items), longest), dtype=torch.long)  # (batch, longest)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        attention_mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),  # (batch,)
        "answers": [item["answer"] for item in items],
        "indices": torch.tensor([item["index"] for item in items], dtype=torch.long),  # (batch,)
    }
