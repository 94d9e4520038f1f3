"""Curriculum training and evaluation of RMTs on the report's tasks."""

from rmt_lab.train.checkpoint import CheckpointError
from rmt_lab.train.config import (
    PRESETS, CurriculumConfig, ExperimentConfig, OptimConfig, RunConfig, preset,
)
from rmt_lab.train.evaluate import accuracy, generalization_matrix, long_evaluation, stage_checkpoints
from rmt_lab.train.trainer import Callback, ProgressBar, Trainer, TrainingDiverged, lr_at, run_experiment

__all__ = [
    "PRESETS", "Callback", "CheckpointError", "CurriculumConfig", "ExperimentConfig", "OptimConfig", "ProgressBar",
    "RunConfig", "Trainer", "TrainingDiverged", "accuracy", "generalization_matrix", "long_evaluation", "lr_at",
    "preset", "run_experiment", "stage_checkpoints",
]
