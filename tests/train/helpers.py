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
