"""Can the base reasoning model learn the samples whose facts lie on one axis?

Usage: python data/results/tuning/reasoning_opposite.py KIND INIT|- RUN_DIR [STEPS] [LR]   (-: fresh adapters)

On 1 segment the base reasoning model answers every sample right except those whose two facts point
opposite ways from the centre (P1 north of P0, P2 south of P0) and whose question asks for P1 or P2:
there it is at chance. Such samples are 1 in 6 of the task's. In them the answer is a parity of three
bits: whether the question's direction word is the one in the fact, whether that fact is stated the
other way round ("The P0 is south of the P1."), and which of the two question forms is used ("What is
north of the P0?" / "What is the P0 south of?"). Each bit alone says nothing, which is what makes parities
hard for gradient descent. This script trains a 1-segment stage from INIT on one of three tasks, all
drawn from `reasoning` by rejection sampling (so every sentence is phrased as there), with validation on
the same task:

- `opposite`: every episode with opposite directions (half ask for the centre, half are the hard case);
- `hard`: of those, the ones whose question asks for P1 or P2 (both question forms): the three bits;
- `flips`: of those, the ones whose question is "What is d of the centre?": two bits (word match, stated
  way round);
- `match`: of those, the ones with no fact stated the other way round: one bit, the word itself.

Run `reasoning_errors.py` on the result to see the standard task's samples by kind.
"""

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rmt_lab.tasks.registry import Episode, register_task
from rmt_lab.tasks.report import OPPOSITE, Reasoning
from rmt_lab.train.config import ExperimentConfig, preset
from rmt_lab.train.trainer import run_experiment

sys.path.insert(0, str(Path(__file__).parent))
from reasoning_errors import directions_from_centre  # noqa: E402


def opposite(episode: Episode) -> bool:
    _, (d1, d2) = directions_from_centre(list(episode.facts))
    return d2 == OPPOSITE[d1]


def hard(episode: Episode) -> bool:
    centre, _ = directions_from_centre(list(episode.facts))
    return opposite(episode) and episode.answer != centre


def asks_by_direction(episode: Episode) -> bool:
    centre, _ = directions_from_centre(list(episode.facts))
    return hard(episode) and episode.question.endswith(f"of the {centre}?")


def stated_from_centre(episode: Episode) -> bool:
    centre, _ = directions_from_centre(list(episode.facts))
    return asks_by_direction(episode) and all(f.endswith(f"the {centre}.") for f in episode.facts)


KINDS: dict[str, Callable[[Episode], bool]] = {
    "opposite": opposite, "hard": hard, "flips": asks_by_direction, "match": stated_from_centre}


def register(kind: str) -> str:
    keep = KINDS[kind]

    class Subset(Reasoning):
        def episode(self, rng: np.random.Generator) -> Episode:
            while not keep(episode := super().episode(rng)):
                pass
            return episode

    register_task(f"reasoning_{kind}")(Subset)
    return f"reasoning_{kind}"


def main(kind: str, init: str, run_dir: str, steps: int = 400, lr: float = 5e-4) -> None:
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}; allowed: {sorted(KINDS)}")
    config = preset("base", "reasoning").to_dict()
    config["name"] = f"base-reasoning-{kind}"
    config["init"] = None if init == "-" else init
    config["task"]["task"] = register(kind)
    config["curriculum"].update(stages=[1], max_steps=steps, min_steps=steps, advance_accuracy=1.0)
    config["optim"]["lr"] = lr
    config["run"].update(eval_samples=512, eval_every=50, checkpoint_every=50)
    run_experiment(ExperimentConfig.from_dict(config), run_dir, resume=(Path(run_dir) / "checkpoints").is_dir())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(f(a) for f, a in zip((int, float), sys.argv[4:])))
