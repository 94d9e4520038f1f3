"""Every figure of the project, the result files it is drawn from, and the command that makes each file.

`render_figures(results, out)` draws every figure whose inputs exist into `out/` (PNG and SVG) and
says, for each one it could not draw, which file is missing and which command makes it. Nothing
here runs an experiment: the commands are only named (`rmt-lab reproduce`, or `rmt-lab figures
--recompute`, runs them).

Figures drawn from training runs and traces are drawn per configuration (the `<config>` prefix of
run and trace folder names: quick, base, ...) into `out/<config>/`, each labelled with its config;
benchmark figures go into `out/`.

The result files, the recipes that make them and the figures that read them: `rmt_lab.catalog`.
Figure 6 is drawn from the config's trace folder whose name contains "reasoning" (else the first one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from rmt_lab.catalog import CATALOG, COMMANDS, SWEEP_TASK, SWEEP_TOKENS, command_line, run_folder
from rmt_lab.viz.tables import MODEL_COLUMNS, TASK_ORDER



def _command(key: str, results: Path, config: str, task: str | None = None, run: Path | None = None) -> str:
    """The command that makes result `key` (rmt_lab.catalog): a run's evaluations by their recipe's command;
    a run, trace or probe by the reproduction step that makes it, which first makes what it reads."""
    entry = CATALOG[key]
    if run is not None and "{run}" in entry.path:
        return command_line(COMMANDS[entry.recipe], {"run_dir": str(run)})
    if entry.recipe == "train" and task:
        return command_line("train", {"config": config, "task": task,
                                      "run_dir": str(run_folder(results, config, task))})
    if entry.recipe.startswith("bench_"):
        return command_line(COMMANDS[entry.recipe], {})
    step = {"trace": "trace reasoning"}.get(key, key)  # "probe": every probe step
    return command_line("reproduce", {config: True, "results": str(results), "force": [step]})


DEFAULT_CONFIG = "quick"  # named in the hints when a results folder holds no run at all


@dataclass(frozen=True)
class Missing:
    """An input a figure needs that is not in the results folder, and the command that makes it."""

    path: str
    command: str

    def __str__(self) -> str:
        return f"{self.path}  (make it with: {self.command})"


@dataclass
class FigureResult:
    name: str
    title: str
    config: str | None = None  # the training configuration drawn; None for benchmark figures
    files: list[Path] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)  # inputs absent (the figure may still be drawn, partly)
    error: str | None = None  # the inputs exist but could not be drawn


@dataclass(frozen=True)
class FigureSpec:
    name: str  # output file stem
    title: str
    inputs: Callable[[Path, str], tuple[object | None, list[Missing]]]  # (results, config) -> (data, missing)
    draw: Callable[[object], dict[str, Figure]]  # data -> {stem: figure}
    per_config: bool = True  # drawn from a configuration's runs or traces (else from the benchmarks)


# ------------------------------------------------------------------ inputs
def configurations(results: Path) -> list[str]:
    """The configurations with runs or traces in `results` (folder names `<config>-...`), in name order."""
    names = {p.parent.name for p in (results / "runs").glob("*/config.json")}
    names |= {p.parent.name for p in (results / "traces").glob("*/trace.json")}
    names |= {p.parent.name for p in (results / "traces").glob("*/probe.parquet")}
    return sorted({name.split("-", 1)[0] for name in names})


def run_folders(results: Path, config: str = DEFAULT_CONFIG) -> dict[str, Path]:
    """Run folders of `config` (runs/<config>-<task>/, holding config.json) by task."""
    found: dict[str, Path] = {}
    for path in sorted((results / "runs").glob(f"{config}-*/config.json")):
        try:
            task = json.loads(path.read_text())["task"]["task"]
        except (ValueError, KeyError, TypeError):
            task = path.parent.name.removeprefix(f"{config}-")
        found.setdefault(task, path.parent)
    return found


def config_label(results: Path, config: str) -> str:
    """What a figure of `config` shows, from its runs' config.json: backbone, memory, segment, adapters."""
    for run in run_folders(results, config).values():
        try:
            c = json.loads((run / "config.json").read_text())
            rmt = c["rmt"]
            adapters = f", adapters of rank {rmt['lora_rank']}" if rmt.get("lora_rank") else ""
            return (f"config {config}: backbone {c['backbone']}{adapters}, {rmt['num_mem_tokens']} memory tokens, "
                    f"{rmt['segment_size']} tokens per segment")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return f"config {config}"


def _per_task_table(results: Path, config: str, key: str,
                    tasks=TASK_ORDER) -> tuple[pd.DataFrame | None, list[Missing]]:
    runs = run_folders(results, config)
    frames, missing = [], []
    for task in tasks:
        run = runs.get(task)
        if run is None:
            run = run_folder(results, config, task)
            missing.append(Missing(str(CATALOG[key].at(run=run)), _command("config", results, config, task)
                                   + " && " + _command(key, results, config, run=run)))
            continue
        path = CATALOG[key].at(run=run)
        if not path.is_file():
            missing.append(Missing(str(path), _command(key, results, config, run=run)))
            continue
        frame = pd.read_parquet(path)
        if "task" not in frame:
            frame["task"] = task
        frames.append(frame)
    return (pd.concat(frames, ignore_index=True) if frames else None), missing


def _single(results: Path, config: str, key: str) -> tuple[pd.DataFrame | None, list[Missing]]:
    path = CATALOG[key].at(results)
    if not path.is_file():
        return None, [Missing(str(path), _command(key, results, config))]
    return pd.read_parquet(path), []


def _continued_runs(results: Path, config: str) -> dict[str, Path]:
    """The folder (continued/) where each task's run is carried on to longer stages, whether it exists or not."""
    return {task: CATALOG["continued_run"].at(results, config=config, task=task) for task in TASK_ORDER}


def _later_runs(results: Path, config: str) -> list[Path]:
    """The folders of the models trained on from each task's run, whether they exist or not: carried on to
    longer stages, then trained to hold memory still over noise."""
    return [*_continued_runs(results, config).values(),
            *(CATALOG["retention_run"].at(results, config=config, task=task) for task in TASK_ORDER)]


def _long_eval_inputs(results: Path, config: str) -> tuple[pd.DataFrame | None, list[Missing]]:
    """The runs' long evaluations with their lengths beyond (`long_eval_beyond`, where evaluated), and those of
    the models trained on from them (continued/) beside them."""
    table, missing = _per_task_table(results, config, "long_eval")
    runs = _later_runs(results, config)
    continued = [pd.read_parquet(p) for p in (CATALOG["long_eval"].at(run=run) for run in runs) if p.is_file()]
    beyond = [CATALOG["long_eval_beyond"].at(run=run) for run in run_folders(results, config).values()]
    frames = ([table] if table is not None else []) + [pd.read_parquet(p) for p in beyond if p.is_file()] + continued
    return (pd.concat(frames, ignore_index=True) if frames else None), missing


def _training_length_inputs(results: Path, config: str) -> tuple[pd.DataFrame | None, list[Missing]]:
    """Every long evaluation of each task's models: the run's, its continued run's, and those of the continued
    run's earlier stages (`eval long --stage N --out <run>/long_eval_stageN.parquet`); one table per model."""
    frames, pattern = [], Path(CATALOG["long_eval_stage"].path.format(run="", stage="*")).name
    for task, continued in _continued_runs(results, config).items():
        run = run_folder(results, config, task)
        stages = sorted(p for p in continued.glob(pattern) if p.stem.removeprefix("long_eval_stage").isdigit())
        for path in [CATALOG["long_eval"].at(run=run), CATALOG["long_eval"].at(run=continued), *stages]:
            if path.is_file():
                frames.append(pd.read_parquet(path).assign(task=task))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    # The figure compares a task's models by training length: it needs a task with a second model.
    if "trained_segments" not in table or table.groupby("task")["trained_segments"].nunique().max() < 2:
        # Named as the two commands that make a second model of a task: its curriculum carried on further.
        run, continued = (run_folder(results, config, "<task>"),
                          CATALOG["continued_run"].at(results, config=config, task="<task>"))
        make = (command_line("train", {"config": config, "task": "<task>", "run_dir": str(continued),
                                       "overrides": [f"init={run}/checkpoints/stage-<N>",
                                                     "curriculum.stages=[<longer stages>]"]})
                + " && " + command_line("eval long", {"run_dir": str(continued)}))
        return None, [Missing(str(CATALOG["long_eval"].at(run=continued)), make)]
    return table.drop_duplicates(["task", "trained_segments", "tokens"]), []


def _ablation_inputs(results: Path, config: str):
    ablation, missing = _per_task_table(results, config, "no_recurrence")
    generalization, more = _per_task_table(results, config, "generalization")
    if ablation is None or generalization is None:
        return None, missing + more
    return (generalization, ablation), missing + more


def _fact_position_inputs(results: Path, config: str):
    """Each run's per-sample long evaluation, with where each sample's facts sit (regenerated from its config)
    and the training length of the model (from the run's table of lengths); runs carried on to longer stages
    and trained to hold memory (continued/) beside the others."""
    from rmt_lab.train import ExperimentConfig
    from rmt_lab.train.evaluate import with_fact_positions

    runs = run_folders(results, config)
    missing = [Missing(str(CATALOG["long_eval_samples"].at(run=run)), _command("long_eval", results, config, run=run))
               for run in runs.values() if not CATALOG["long_eval_samples"].at(run=run).is_file()]
    frames = []
    for run in [*runs.values(), *_later_runs(results, config)]:
        path, lengths = CATALOG["long_eval_samples"].at(run=run), CATALOG["long_eval"].at(run=run)
        if not path.is_file():
            continue
        experiment = ExperimentConfig.from_dict(json.loads((run / "config.json").read_text()))
        samples = with_fact_positions(pd.read_parquet(path).assign(task=experiment.task.task), experiment.task)
        if lengths.is_file() and "trained_segments" in (table := pd.read_parquet(lengths)):
            # only the lengths whose evaluation finished, as Figure 1 draws them, with the model they measured
            model = [c for c in MODEL_COLUMNS if c in table]
            samples = samples.merge(table[["tokens", *model]], on="tokens", how="inner")
        frames.append(samples)
    return (pd.concat(frames, ignore_index=True) if frames else None), missing


def _memory_sweep_inputs(results: Path, config: str):
    """The sweep's long evaluations (sweeps/memory/<config>-<task>-m<N>/) with the main run's row at
    the same length (its own memory size)."""
    frames = []
    for path in sorted((results / "sweeps" / "memory").glob(f"{config}-*/long_eval.parquet")):
        memory = json.loads((path.parent / "config.json").read_text())["rmt"]["num_mem_tokens"]
        frames.append(pd.read_parquet(path).assign(num_mem_tokens=memory))
    if not frames:
        # Named as the two commands that make one sweep point: only some reproduction plans hold a sweep.
        run = results / CATALOG["sweep_run"].path.format(config=config, task=SWEEP_TASK, memory="<N>")
        make = (command_line("train", {"config": config, "task": SWEEP_TASK, "run_dir": str(run),
                                       "overrides": ["rmt.num_mem_tokens=<N>"]})
                + " && " + command_line("eval long", {"run_dir": str(run), "min_tokens": SWEEP_TOKENS,
                                                      "max_tokens": SWEEP_TOKENS}))
        return None, [Missing(f"{results}/sweeps/memory/{config}-<task>-m<N>/long_eval.parquet", make)]
    sweep = pd.concat(frames, ignore_index=True)
    for task, run in run_folders(results, config).items():
        main = run / "long_eval.parquet"
        if task in set(sweep["task"]) and main.is_file():
            rows = pd.read_parquet(main)
            memory = json.loads((run / "config.json").read_text())["rmt"]["num_mem_tokens"]
            rows = rows[(rows["task"] == task) & rows["tokens"].isin(sweep["tokens"])]
            frames.append(rows.assign(num_mem_tokens=memory))
    return pd.concat(frames, ignore_index=True), []


def _training_inputs(results: Path, config: str):
    runs = run_folders(results, config)
    frames = [pd.read_parquet(run / "metrics.parquet").assign(run=run.name) for run in runs.values()
              if (run / "metrics.parquet").is_file()]
    if frames:
        return pd.concat(frames, ignore_index=True), []
    return None, [Missing(str(CATALOG["metrics"].at(results, config=config, task="memorize")),
                          _command("metrics", results, config, "memorize"))]


def trace_folders(results: Path, config: str | None = None) -> list[Path]:
    """Finished trace folders (with trace.json) under traces/ (of `config`, if given), reasoning ones first."""
    pattern = f"{config}-*/trace.json" if config else "*/trace.json"
    folders = sorted(p.parent for p in (results / "traces").glob(pattern))
    return sorted(folders, key=lambda p: "reasoning" not in p.name)


def load_trace(folder: str | Path):
    """Open a trace folder with rmt_lab.trace (lazily: nothing big is read until a figure needs it)."""
    try:
        from rmt_lab.trace import Trace
    except ImportError as err:  # the trace package is a separate part of rmt_lab
        raise RuntimeError(f"reading trace folders needs rmt_lab.trace, which is not importable here: {err}") from err
    return Trace.load(folder)


def _trace_inputs(results: Path, config: str, need: str = "summaries"):
    folders = trace_folders(results, config)
    command = _command("trace", results, config)
    if not folders:
        return None, [Missing(f"{results}/traces/{config}-<name>/trace.json", command)]
    trace = load_trace(folders[0])
    if need == "maps" and not trace.map_segments:
        return None, [Missing(f"{folders[0]}/maps/ (full attention maps)", command)]
    if need == "memory":
        try:
            return (trace.memory_states(), trace.summaries), []
        except KeyError:
            return None, [Missing(f"{folders[0]}/memory/ (memory states)", command)]
    return trace, []


def _probe_inputs(results: Path, config: str):
    paths = sorted((results / "traces").glob(f"{config}-*/probe.parquet"))
    if not paths:
        return None, [Missing(f"{results}/traces/{config}-<name>/probe.parquet",
                              _command("probe", results, config))]
    return pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True), []


# ------------------------------------------------------------------ the figures
def _figures() -> list[FigureSpec]:
    from rmt_lab.viz import attention, memory, scaling, training

    return [
        FigureSpec("fig1_accuracy_vs_length", "Figure 1: accuracy and memory versus input length",
                   _long_eval_inputs,
                   lambda d: {"fig1_accuracy_vs_length": scaling.plot_long_context(d)}),
        FigureSpec("fig3_flops", "Figure 3: FLOPs versus input length, full attention vs RMT",
                   lambda r, c: _single(r, c, "flops"),
                   lambda d: {"fig3_flops": scaling.plot_flops(d)}, per_config=False),
        FigureSpec("fig5_generalization", "Figure 5: generalization across lengths",
                   lambda r, c: _per_task_table(r, c, "generalization"),
                   lambda d: {"fig5_generalization": training.plot_generalization(d),
                              "fig5_generalization_heatmap": training.plot_generalization_heatmap(d)}),
        FigureSpec("fact_position", "Long-input accuracy by where the fact sits",
                   _fact_position_inputs,
                   lambda d: {"fact_position": scaling.plot_accuracy_by_fact_position(d)}),
        FigureSpec("training_length", "Long-input accuracy of each task's models by training length",
                   _training_length_inputs,
                   lambda d: {"training_length": scaling.plot_accuracy_by_training_length(d)}),
        FigureSpec("ablation_no_recurrence", "Control: the last stage's model without recurrence",
                   _ablation_inputs, lambda d: {"ablation_no_recurrence": training.plot_recurrence_ablation(*d)}),
        FigureSpec("memory_size_sweep", "Accuracy at one long length versus memory size",
                   _memory_sweep_inputs, lambda d: {"memory_size_sweep": scaling.plot_memory_size_sweep(d)}),
        FigureSpec("fig6_memory_operations", "Figure 6: attention maps of memory operations",
                   lambda r, c: _trace_inputs(r, c, "maps"),
                   lambda t: {"fig6_memory_operations":
                              attention.plot_memory_operations(attention.memory_operation_panels(t))}),
        FigureSpec("training_curves", "Curriculum training curves",
                   _training_inputs, lambda d: {"training_curves": training.plot_training_curves(d)}),
        FigureSpec("memory_vs_length", "Measured memory and throughput, RMT vs full attention",
                   lambda r, c: _single(r, c, "memory"),
                   lambda d: {"memory_vs_length": scaling.plot_measured_memory(d)}, per_config=False),
        FigureSpec("read_write_profile", "Memory read/write profile across segments and layers",
                   _trace_inputs, lambda t: {"read_write_profile": memory.plot_read_write_profile(t.summaries)}),
        FigureSpec("write_precision", "Write precision per segment",
                   _trace_inputs, lambda t: {"write_precision": memory.plot_write_precision(t.summaries)}),
        FigureSpec("memory_trajectory", "Memory state trajectory",
                   lambda r, c: _trace_inputs(r, c, "memory"),
                   lambda d: {"memory_trajectory": memory.plot_memory_trajectory(memory.memory_projection(*d))}),
        FigureSpec("probe_accuracy", "Probe accuracy versus distance from the fact",
                   _probe_inputs, lambda d: {"probe_accuracy": memory.plot_probe_accuracy(d)}),
    ]


def figure_names() -> list[str]:
    return [spec.name for spec in _figures()]


def _jobs(results: Path, config: str | None, specs: list[FigureSpec]) -> list[tuple[FigureSpec, str | None]]:
    """(figure, config) pairs to draw: benchmark figures once, the others once per configuration."""
    configs = [config] if config else (configurations(results) or [DEFAULT_CONFIG])
    return [(spec, c) for spec in specs if not spec.per_config for c in [None]] + [
        (spec, c) for c in configs for spec in specs if spec.per_config]


def missing_inputs(results: str | Path = "data/results", config: str | None = None) -> dict[str, list[Missing]]:
    """Per figure (`<config>/<name>` for figures of a configuration), the inputs absent from `results`
    (empty lists: everything is there). Reads the tables."""
    results = Path(results)
    out = {}
    for spec, c in _jobs(results, config, _figures()):
        try:
            _, missing = spec.inputs(results, c or DEFAULT_CONFIG)
        except Exception as err:  # noqa: BLE001 - an unreadable input is reported, not fatal
            missing = [Missing(spec.name, f"(unreadable: {err})")]
        out[f"{c}/{spec.name}" if c else spec.name] = missing
    return out


def inputs_report(results: str | Path = "data/results", config: str | None = None) -> str:
    """What `rmt-lab figures --list` prints: a line per figure, ready or the inputs it lacks."""
    return "\n".join(f"{name}: " + ("ready" if not missing else "missing " + "; ".join(map(str, missing)))
                     for name, missing in missing_inputs(results, config).items())


def render_figures(results: str | Path = "data/results", out: str | Path = "figures",
                   only: list[str] | None = None, formats: tuple[str, ...] = ("png", "svg"),
                   config: str | None = None) -> list[FigureResult]:
    """Draw every figure whose inputs are in `results` into `out` (PNG + SVG); report the rest.

    Figures of runs and traces are drawn for `config`, or for every configuration found, into
    `out/<config>/`, each labelled with what its configuration is; benchmark figures into `out/`.
    A figure with some inputs missing (e.g. one task of three) is drawn from what is there and its
    result still lists what is missing.
    """
    from rmt_lab.viz.style import label_figure, save_figure

    results, out = Path(results), Path(out)
    specs = _figures()
    if only:
        unknown = sorted(set(only) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"unknown figures {unknown}; figures: {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in only]
    report = []
    for spec, c in _jobs(results, config, specs):
        result = FigureResult(spec.name, spec.title, config=c)
        try:
            data, result.missing = spec.inputs(results, c or DEFAULT_CONFIG)
            if data is not None:
                for stem, fig in spec.draw(data).items():
                    if c:
                        label_figure(fig, config_label(results, c))
                    result.files += save_figure(fig, (out / c if c else out) / stem, formats)
        except Exception as err:  # noqa: BLE001 - one bad input must not stop the other figures
            result.error = f"{type(err).__name__}: {err}"
        report.append(result)
    return report


def figures_failed(report: list[FigureResult]) -> bool:
    """No figure drawn, or one failed: what fails `rmt-lab figures` and the figures step of a reproduction."""
    return not any(r.files for r in report) or any(r.error for r in report)


def format_report(report: list[FigureResult]) -> str:
    """The figures command's summary: drawn, partly drawn, not drawn (with the commands to run)."""
    lines = []
    for r in report:
        name = f"{r.config}/{r.name}" if r.config else r.name
        if r.error:
            lines.append(f"FAILED   {name}: {r.error}")
        elif r.files:
            state = "partial " if r.missing else "drew    "
            lines.append(f"{state} {name}: {', '.join(p.name for p in r.files)}")
        else:
            lines.append(f"missing  {name}: {r.title}")
        for m in r.missing:
            lines.append(f"           needs {m}")
    return "\n".join(lines)


def drawn_summary(report: list[FigureResult], results: str | Path, out: str | Path) -> str:
    """The line under `format_report`: how many figures were drawn, and the figures' names when none was."""
    drawn = sum(bool(r.files) for r in report)
    return (f"{drawn} of {len(report)} figures drawn into {out}/ from {results}/"
            + (f"; figures: {', '.join(figure_names())}" if not drawn else ""))
