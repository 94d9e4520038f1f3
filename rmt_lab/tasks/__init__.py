"""Synthetic long-context tasks of the RMT report (Bulatov et al. 2023, arXiv 2304.11062, section 4).

memorize, detect_memorize and reasoning state bAbI-style facts inside long noise text (Python's own
prose by default) and ask about them at the end; `placement="sentence"` scatters the facts between
noise sentences as BABILong does. Samples are deterministic per (config, split, index), carry the
token positions of their facts and question, and stream segment by segment at any length.

    from rmt_lab.tasks import TaskConfig, TaskGenerator
    gen = TaskGenerator(TaskConfig(task="reasoning", length=4096))  # 4096 x 499 tokens
    sample = gen.sample("test", 0)
    for segment in sample.segments():  # (499,) int64 tensors
        ...
    sample.facts[0].segments, sample.question.start, sample.label

This package is data only: it never imports rmt_lab.model.
"""

from rmt_lab.tasks.config import TaskConfig
from rmt_lab.tasks.dataset import PAD_ID, TaskDataset, collate
from rmt_lab.tasks.export import export_split, split_frame
from rmt_lab.tasks.noise import SPLITS, NoiseBank, NoiseError, NoiseStream, clean_sentences, load_noise
from rmt_lab.tasks.preview import format_sample
from rmt_lab.tasks.registry import (
    ACTIONS,
    DIRECTIONS,
    NAMES,
    NUM_CLASSES,
    PLACES,
    Episode,
    TaskSpec,
    available_tasks,
    get_task,
    register_task,
)
from rmt_lab.tasks.sample import (
    Sample,
    Span,
    TaskGenerator,
    generator_for,
    iter_batch,
    iter_batch_segments,
    make_sample,
    sample_segments,
    sample_tokens,
)

__all__ = [
    "ACTIONS", "DIRECTIONS", "NAMES", "NUM_CLASSES", "PAD_ID", "PLACES", "SPLITS",
    "Episode", "NoiseBank", "NoiseError", "NoiseStream", "Sample", "Span", "TaskConfig", "TaskDataset",
    "TaskGenerator", "TaskSpec",
    "available_tasks", "clean_sentences", "collate", "export_split", "format_sample", "generator_for", "get_task",
    "iter_batch", "iter_batch_segments", "load_noise", "make_sample", "register_task",
    "sample_segments", "sample_tokens", "split_frame",
]
