"""Run by test_multiprocess under torchrun: a tiny curriculum, metrics written to argv[1]; with argv[2] == "slots",
reasoning with its memory layout taught and its memory asked to hold still over noise (a 1-segment stage, whose
memory never carries the facts, then 4)."""

import dataclasses
import sys

from rmt_lab.train import run_experiment
from tests.train.helpers import slot_experiment, tiny_experiment

slots = sys.argv[2:] == ["slots"]
config = (slot_experiment((1, 4), max_steps=6, dropout=0.0) if slots
          else tiny_experiment(stages=(1, 2), max_steps=6, dropout=0.0))
if slots:
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, retention_loss=1.0))
config = dataclasses.replace(config, run=dataclasses.replace(config.run, log_every=1))
run_experiment(config, sys.argv[1], callbacks=[])
