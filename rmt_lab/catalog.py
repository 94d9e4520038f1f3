"""Every result file: where it lives, the recipe that makes it, the command that runs that recipe, and the
figures that read it. `rmt-lab reproduce` plans its steps from here, the recipes and the CLI take their
default paths from here, and `rmt-lab figures` names the command for every missing input from here.

Paths are templates under the results folder (default data/results/); `{config}-{task}` is a run,
`{run}` a run folder:

    runs/{config}-{task}/                    config.json, metrics.parquet, checkpoints/stage-N/ (train)
    {run}/generalization.parquet             eval_generalization    Figure 5
    {run}/long_eval.parquet                  eval_long              Figure 1, memory-size sweep, training length
    {run}/long_eval_samples.parquet          eval_long              accuracy by fact position
    {run}/long_eval_stage{stage}.parquet     eval_long --stage N    training length (an earlier stage's model)
    {run}/long_eval_beyond.parquet           eval_long --out        Figure 1 (lengths past the main evaluation's)
    {run}/no_recurrence.parquet              eval_ablation          the control without recurrence
    sweeps/memory/{config}-{task}-m{memory}/ a run with `memory` memory tokens, evaluated at one length
    continued/{config}-{task}/               a run carrying a finished curriculum on to longer stages
    traces/{config}-reasoning/trace.json     trace                  Figure 6, read/write profile, ...
    traces/{config}-{task}-probe/probe.parquet   probe              probe accuracy
    bench/flops.parquet, memory.parquet, speed.parquet    bench     Figure 3, measured memory, speed table
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ResultFile:
    key: str
    path: str  # template relative to the results folder, or to `{run}`
    recipe: str  # the rmt_lab.recipes function that writes it
    figures: tuple[str, ...] = ()  # names in rmt_lab.viz.figure_names()

    def at(self, results: str | Path = "data/results", **fields: Any) -> Path:
        """The file's path; fields fill the template (config, task, run, memory, part)."""
        if "{run}" in self.path:
            run = fields.pop("run", None) or run_folder(results, fields["config"], fields["task"])
            return Path(self.path.replace("{run}", str(run)).format(**fields))
        return Path(results) / self.path.format(**fields)


RUN = "runs/{config}-{task}"
CATALOG: dict[str, ResultFile] = {r.key: r for r in (
    ResultFile("config", RUN + "/config.json", "train"),
    ResultFile("metrics", RUN + "/metrics.parquet", "train", ("training_curves",)),
    ResultFile("stage", RUN + "/checkpoints/stage-{stage}", "train"),
    ResultFile("generalization", "{run}/generalization.parquet", "eval_generalization",
               ("fig5_generalization", "ablation_no_recurrence")),
    ResultFile("long_eval", "{run}/long_eval.parquet", "eval_long",
               ("fig1_accuracy_vs_length", "memory_size_sweep", "training_length")),
    ResultFile("long_eval_stage", "{run}/long_eval_stage{stage}.parquet", "eval_long", ("training_length",)),
    ResultFile("long_eval_samples", "{run}/long_eval_samples.parquet", "eval_long", ("fact_position",)),
    # Lengths past the main evaluation's, few samples each (hours a sample on a CPU), in their own table so that
    # redoing one evaluation never deletes the other.
    ResultFile("long_eval_beyond", "{run}/long_eval_beyond.parquet", "eval_long", ("fig1_accuracy_vs_length",)),
    ResultFile("no_recurrence", "{run}/no_recurrence.parquet", "eval_ablation",
               ("ablation_no_recurrence",)),
    ResultFile("sweep_run", "sweeps/memory/{config}-{task}-m{memory}", "train", ("memory_size_sweep",)),
    ResultFile("continued_run", "continued/{config}-{task}", "train"),
    ResultFile("retention_run", "continued/{config}-{task}-retention", "train"),
    ResultFile("slot_run", "slots/{config}-reasoning-{part}", "train"),
    ResultFile("trace", "traces/{config}-reasoning/trace.json", "trace",
               ("fig6_memory_operations", "read_write_profile", "write_precision", "memory_trajectory")),
    ResultFile("probe", "traces/{config}-{task}-probe/probe.parquet", "probe",
               ("probe_accuracy",)),
    ResultFile("flops", "bench/flops.parquet", "bench_flops", ("fig3_flops",)),
    ResultFile("memory", "bench/memory.parquet", "bench_memory", ("memory_vs_length",)),
    ResultFile("speed", "bench/speed.parquet", "bench_speed"),
)}


def run_folder(results: str | Path, config: str, task: str) -> Path:
    return Path(results) / RUN.format(config=config, task=task)


def path(key: str, results: str | Path = "data/results", **fields: Any) -> Path:
    """The path of result `key` (see CATALOG)."""
    if key not in CATALOG:
        raise ValueError(f"unknown result {key!r}; results: {sorted(CATALOG)}")
    return CATALOG[key].at(results, **fields)


def run_file(key: str, run: str | Path) -> Path:
    """A result file of the run folder `run` (generalization, long_eval, no_recurrence)."""
    return CATALOG[key].at(run=run)


# The recipe arguments whose command-line option is not --<argument with dashes>.
_OPTIONS = {"overrides": "--set", "bptt_depths": "--bptt"}


def option(argument: str) -> str:
    """The command-line option of a recipe's `argument`."""
    return _OPTIONS.get(argument, "--" + argument.replace("_", "-"))


def command_line(command: str, arguments: dict[str, Any]) -> str:
    """`rmt-lab <command>` with `arguments` (a recipe's keyword arguments) as its options: what a person types
    to do what `recipes.<recipe>(**arguments)` does. Tests parse these back with the CLI's own parser."""
    words = ["rmt-lab", *command.split()]
    for name, value in arguments.items():
        if value is None or value is False:
            continue
        words.append(option(name))
        if value is True:
            continue
        words += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return shlex.join(words)


# The memory-size sweep: the task its models learn, and the one long length each is evaluated at.
SWEEP_TASK = "memorize"
SWEEP_TOKENS = 128_000

# The rmt-lab subcommand of each recipe.
COMMANDS = {
    "train": "train", "eval_generalization": "eval generalization", "eval_long": "eval long",
    "eval_ablation": "eval ablation", "trace": "trace", "probe": "probe", "bench_flops": "bench flops",
    "bench_memory": "bench memory", "bench_speed": "bench speed", "figures": "figures",
}


def recipe_command(recipe: str) -> str:
    """The rmt-lab subcommand that runs `recipe`."""
    if recipe not in COMMANDS:
        raise ValueError(f"no command runs recipe {recipe!r}; recipes: {sorted(COMMANDS)}")
    return COMMANDS[recipe]
