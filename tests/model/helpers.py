import torch

from rmt_lab.model import RecurrentWrapper, RMTConfig


def tiny(name="tiny-bert", dropout=None, **overrides):
    config = dict(num_mem_tokens=4, segment_size=16, num_classes=6)
    config.update(overrides)
    return RecurrentWrapper.from_backbone(name, RMTConfig(**config), dropout=dropout).eval()


def tokens(batch, length, seed=0):
    return torch.randint(1000, 20000, (batch, length), generator=torch.Generator().manual_seed(seed))
