import dataclasses

from rmt_lab.model import RMTConfig
from rmt_lab.tasks import TaskConfig
from rmt_lab.train import CurriculumConfig, ExperimentConfig, OptimConfig, RunConfig


def tiny_experiment(task="memorize", stages=(1,), max_steps=8, **changes) -> ExperimentConfig:
    seg = 16
    config = ExperimentConfig(
        name=f"tiny-{task}",
        backbone="tiny-bert",
        rmt=RMTConfig(num_mem_tokens=2, segment_size=seg, num_classes=6),
        task=TaskConfig(task=task, segment_size=seg),
        curriculum=CurriculumConfig(stages=stages, max_steps=max_steps),
        optim=OptimConfig(lr=2e-3, warmup_steps=2, batch_size=8),
        run=RunConfig(eval_every=4, eval_samples=16, eval_batch_size=16, log_every=2, checkpoint_every=3),
    )
    return dataclasses.replace(config, **changes)


def slot_experiment(stages, max_steps, slot_loss=0.5, slot_classes=(), **changes):
    """Tiny reasoning with its memory layout taught: 4 memory tokens for reasoning's 4 slots."""
    base = tiny_experiment("reasoning", stages=stages, max_steps=max_steps)
    rmt = dataclasses.replace(base.rmt, num_mem_tokens=4, segment_size=32, slot_classes=slot_classes)
    return dataclasses.replace(base, rmt=rmt, task=dataclasses.replace(base.task, segment_size=32),
                               optim=dataclasses.replace(base.optim, slot_loss=slot_loss), **changes)
