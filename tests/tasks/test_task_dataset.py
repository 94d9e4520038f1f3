"""TaskDataset and collate: padded batches with attention masks and labels."""

import torch
from torch.utils.data import DataLoader

from rmt_lab.tasks import PLACES, TaskDataset, collate


def test_dataset_items_are_the_generators_samples(make_generator):
    gen = make_generator(task="detect_memorize", segment_size=32, length=3)
    ds = TaskDataset(gen, "validation", size=10, start=100)
    assert len(ds) == 10
    item = ds[2]
    s = gen.sample("validation", 102)
    assert torch.equal(item["input_ids"], s.tokens()) and item["label"] == s.label and item["index"] == 102
    assert PLACES[item["label"]] == item["answer"]


def test_collate_pads_with_zero_and_masks(make_generator):
    short = {"input_ids": torch.tensor([5, 6, 7]), "label": 1, "answer": "hallway", "index": 0}
    long = {"input_ids": torch.tensor([8, 9, 10, 11, 12]), "label": 4, "answer": "bedroom", "index": 1}
    batch = collate([short, long])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 4] and batch["answers"] == ["hallway", "bedroom"]


def test_dataloader_batches(make_generator):
    gen = make_generator(task="reasoning", segment_size=32, length=2)
    batches = list(DataLoader(TaskDataset(gen, "train", size=10), batch_size=4, collate_fn=collate))
    assert [b["input_ids"].shape for b in batches] == [(4, 64), (4, 64), (2, 64)]
    assert all(b["attention_mask"].all() for b in batches)
    assert batches[2]["indices"].tolist() == [8, 9]
