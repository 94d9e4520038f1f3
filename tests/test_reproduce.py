"""`rmt-lab reproduce`: the plan's steps, skipping what is done, resuming, forcing, stopping on failure."""

import json
import shlex
from pathlib import Path

import pytest

from rmt_lab.cli import main
from rmt_lab.reproduce import TASKS, plan, reproduce


def call(step, resume=False):
    """What running `step` passes to the process runner: its recipe and arguments."""
    return step.recipe, {**step.arguments, **(step.resume if resume else {})}


class Recorder:
    """Stands in for the recipes' processes: records each call and makes the files its step promises."""

    def __init__(self, steps, fail=None):
        self.steps, self.calls, self.fail = steps, [], fail

    def __call__(self, recipe, arguments, threads=1, output=None):
        self.calls.append((recipe, arguments))
        if self.fail and self.fail in recipe:
            return 3
        for step in self.steps:
            if call(step) == (recipe, {k: v for k, v in arguments.items() if k not in step.resume}):
                for path in step.outputs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                if recipe == "eval_long":
                    finished_long_evaluation(arguments)
        return 0


def finished_long_evaluation(arguments):
    """A long-evaluation table holding every length and sample count the step's arguments ask for."""
    import pandas as pd

    from rmt_lab.recipes import _long_counts
    from rmt_lab.tasks import TaskConfig

    run = Path(arguments["run_dir"])
    if not (run / "config.json").exists():
        (run / "config.json").write_text(json.dumps({"task": TaskConfig(segment_size=32).to_dict()}))
    allowed = {"min_tokens", "max_tokens", "samples", "samples_from"}
    _, counts = _long_counts(run, **{"min_tokens": 16_000, "max_tokens": 2_048_000, "samples": 16, "samples_from": None,
                                     **{k: v for k, v in arguments.items() if k in allowed}})
    pd.DataFrame({"n_segments": list(counts), "n_samples": list(counts.values())}).to_parquet(run / "long_eval.parquet")


def parses(step):
    """The step's command line, parsed by the real CLI into the step's arguments."""
    from rmt_lab.cli import build_parser

    args = vars(build_parser().parse_args(shlex.split(step.command())[1:]))
    for name, value in step.arguments.items():
        got = args[name]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, name
    return args


def test_quick_plan_covers_every_figure_input(tmp_path):
    steps = plan("quick", tmp_path / "results", tmp_path / "figures")
    names = [s.name for s in steps]
    for task in TASKS:
        assert {f"train {task}", f"generalization {task}", f"long evaluation {task}"} <= set(names)
    assert names[-1] == "figures" and "trace reasoning" in names
    assert {"probe detect_memorize", "probe reasoning"} <= set(names)
    long_memorize = next(s for s in steps if s.name == "long evaluation memorize")
    assert long_memorize.arguments["max_tokens"] == 2_048_000
    for step in steps:  # every step is also a command line a person can type
        parses(step)
    with pytest.raises(ValueError, match="unknown plan 'huge'; plans: \\['quick', 'base', 'paper'\\]"):
        plan("huge")


def test_runs_what_is_missing_then_skips_everything(tmp_path):
    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    fake = Recorder(steps)
    assert reproduce(steps, results=results, run=fake, echo=lambda s: None) == 0
    assert len(fake.calls) == len(steps)
    log = json.loads((results / "reproduce-quick.json").read_text())
    assert [r["step"] for r in log["steps"]] == [s.name for s in steps] and "total_seconds" in log
    again = Recorder(steps)
    assert reproduce(steps, results=results, run=again, echo=lambda s: None, plan_name="base") == 0
    assert again.calls == [call(steps[-1])]  # only the figures, which have no files to check
    # Each plan keeps its own step times: the second run (all but one step skipped) left the first's alone.
    assert json.loads((results / "reproduce-quick.json").read_text()) == log
    assert [r["status"] for r in json.loads((results / "reproduce-base.json").read_text())["steps"]][:-1] == \
        ["skipped"] * (len(steps) - 1)


def test_interrupted_training_resumes_and_force_starts_over(tmp_path):
    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    train = next(s for s in steps if s.name == "train memorize")
    train.resume_from.mkdir(parents=True)
    (train.resume_from / "LATEST").write_text('{"checkpoint": "step-0000050"}')
    fake = Recorder(steps)
    reproduce([train], results=results, run=fake, echo=lambda s: None)
    assert fake.calls == [call(train, resume=True)]
    forced = Recorder(steps)
    reproduce([train], force=["train memorize"], results=results, run=forced, echo=lambda s: None)
    assert forced.calls == [call(train)] and not (train.resume_from / "LATEST").exists()


def test_stops_at_the_first_failure_and_names_bad_steps(tmp_path):
    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    fake = Recorder(steps, fail="generalization")
    lines = []
    assert reproduce(steps, results=results, run=fake, echo=lines.append) == 3
    assert fake.calls[-1][0] == "eval_generalization" and any("FAILED (exit 3)" in line for line in lines)
    assert not any(recipe == "figures" for recipe, _ in fake.calls)  # nothing after the failing group
    with pytest.raises(ValueError, match="no such step"):
        reproduce(steps, force=["tain"], results=results, run=fake)


def test_cli_lists_the_plan(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--list", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[2/14] train memorize (to do): rmt-lab train --config quick --task memorize" in out
    assert main(["reproduce", "--quick", "--force", "nothing", "--results", str(tmp_path)]) == 2
    assert "no such step" in capsys.readouterr().err


def test_a_retrained_model_makes_its_evaluations_stale(tmp_path):
    import os

    from rmt_lab.reproduce import made_from

    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    reproduce(steps, results=results, run=Recorder(steps), echo=lambda s: None)
    gen = next(s for s in steps if s.name == "generalization memorize")
    records = made_from(results)
    assert gen.done(records, results)
    # Checkout order sets file times in a fresh clone: the same model with a newer time is not a new model.
    later = gen.outputs[0].stat().st_mtime + 10
    os.utime(gen.inputs[0], (later, later))
    assert gen.done(records, results) and gen.stale()  # the record decides; file times alone would redo it
    gen.inputs[0].write_bytes(b"retrained")  # another model
    assert gen.stale(records, results) and not gen.done(records, results)
    again = Recorder(steps)
    reproduce(steps, results=results, run=again, echo=lambda s: None)
    assert call(gen) in again.calls and gen.done(made_from(results), results)
    assert call(next(s for s in steps if s.name == "train memorize")) not in again.calls



def test_a_long_evaluation_of_a_retrained_model_keeps_none_of_the_old_model_s_samples(tmp_path):
    from rmt_lab.train.evaluate import parts_dir, samples_path

    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    reproduce(steps, results=results, run=Recorder(steps), echo=lambda s: None)
    long = next(s for s in steps if s.name == "long evaluation memorize")
    old = [samples_path(long.outputs[0]), parts_dir(long.outputs[0], 250) / "b0000000.parquet"]
    for path in old:  # what the evaluation of the model before left: its answers, a length in progress
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"the old model's")
    long.inputs[0].write_bytes(b"retrained")
    seen = []

    def run(recipe, arguments, threads, output):
        if recipe == "eval_long":
            seen.extend(path.exists() for path in old)
        return Recorder(steps)(recipe, arguments, threads, output)

    reproduce(steps, results=results, run=run, echo=lambda s: None)
    assert seen == [False, False]  # an evaluation that would have reused them started from nothing


def test_steps_of_a_group_run_side_by_side_with_their_own_logs(tmp_path):
    import threading

    results = tmp_path / "results"
    steps = [s for s in plan("quick", results, tmp_path / "figures") if s.name.startswith("train")]
    meet = threading.Barrier(2, timeout=10)  # passes only if two trainings are running at once
    seen = []

    def fake(recipe, arguments, threads, output):
        seen.append((threads, output))
        if arguments["task"] != "reasoning":
            meet.wait()
        return 0

    assert reproduce(steps, results=results, jobs=2, run=fake, echo=lambda s: None) == 0
    assert len(seen) == 3 and all(output.parent == results / "logs" for _, output in seen)
    solo = []
    reproduce(steps[:1], results=results, jobs=2, run=lambda r, a, t, o: solo.append((t, o)) or 0,
              echo=lambda s: None)
    assert solo[0][1] is None  # alone: all threads, output to the terminal


def test_a_step_starts_only_after_the_step_of_its_group_that_makes_its_model(tmp_path):
    import threading

    results = tmp_path / "results"
    steps = [s for s in plan("base", results, tmp_path / "figures") if s.group == "continue"]
    assert [s.name.split(" ")[0] for s in steps] == ["train", "long", "train", "long", "train", "long"]
    running, overlaps, lock = set(), [], threading.Lock()

    def fake(recipe, arguments, threads, output):
        step = next(s for s in steps if s.recipe == recipe and s.arguments == arguments)
        with lock:
            overlaps.extend((step.name, other) for other in running)
            running.add(step.name)
        threading.Event().wait(0.2)
        for path in step.outputs:  # what the step makes, for the steps reading it
            path.mkdir(parents=True, exist_ok=True) if recipe == "train" else path.touch()
        with lock:
            running.discard(step.name)
        return 0

    assert reproduce(steps, results=results, jobs=2, run=fake, echo=lambda s: None) == 0
    # an evaluation runs beside the next training, never beside its own model's
    assert {frozenset(pair) for pair in overlaps} == {
        frozenset({"train detect_memorize to hold its memory over noise",
                   "long evaluation detect_memorize trained on to 64 segments"}),
        frozenset({"train reasoning on to 32 segments",
                   "long evaluation detect_memorize holding its memory over noise"})}


def test_figures_recompute_reruns_every_experiment_first(tmp_path, monkeypatch):
    import rmt_lab.reproduce as reproduce_module

    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    fake = Recorder(steps)
    monkeypatch.setattr(reproduce_module, "_run_process", fake)
    main(["figures", "--recompute", "--results", str(results), "--out", str(tmp_path / "figures")])
    assert sorted(map(str, fake.calls)) == sorted(str(call(s)) for s in steps if s.name != "figures")


def test_fresh_clone_with_committed_results_retrains_then_reevaluates(tmp_path):
    import os

    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    evaluations = [s for s in steps if s.group == "evaluate"]
    for step in evaluations:  # committed results, but no checkpoints (they are not committed)
        for path in step.outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path, (1e9, 1e9))
    fake = Recorder(steps)
    assert reproduce(steps, results=results, run=fake, echo=lambda s: None) == 0
    assert all(call(step) in fake.calls for step in evaluations)  # judged after the trainings ran


def test_base_plan_evaluates_every_task_at_the_issue_s_sample_counts(tmp_path):
    steps = {s.name: s for s in plan("base", tmp_path / "results", tmp_path / "figures")}
    for step in steps.values():
        parses(step)
    for task in TASKS:
        long = steps[f"long evaluation {task}"].arguments
        assert long["max_tokens"] == 2_048_000 and long["samples"] == 64 and long["samples_from"] == [512_000, 16]
        gen = steps[f"generalization {task}"].arguments
        assert gen["max_segments"] == 15 and gen["samples"] == 128
        assert f"no-recurrence control {task}" in steps
        assert steps[f"train {task}"].arguments["config"] == "base"
    beyond = steps["long evaluation memorize at 10,240,000 tokens"]
    assert beyond.arguments["min_tokens"] == beyond.arguments["max_tokens"] == 10_240_000
    assert beyond.outputs[0].name == "long_eval_beyond.parquet" == Path(beyond.arguments["out"]).name
    assert beyond.inputs == steps["long evaluation memorize"].inputs  # the same model, its own table
    sweep = [name for name in steps if "memory tokens" in name]
    assert len(sweep) == 8 and "train memorize with 1 memory tokens" in sweep
    train1 = steps["train memorize with 1 memory tokens"].arguments
    assert train1["overrides"] == ["rmt.num_mem_tokens=1", "name=base-memorize-m1"]
    assert train1["run_dir"].endswith("sweeps/memory/base-memorize-m1")
    continued = steps["train detect_memorize on to 64 segments"]
    assert continued.inputs == steps["train detect_memorize"].outputs  # starts from the finished curriculum
    assert f"init={continued.inputs[0]}" in continued.arguments["overrides"]
    assert continued.outputs[0].name == "stage-64" and continued.arguments["run_dir"].endswith(
        "continued/base-detect_memorize")
    assert steps["long evaluation detect_memorize trained on to 64 segments"].inputs == continued.outputs
    held = steps["train detect_memorize to hold its memory over noise"]
    assert held.inputs == continued.outputs and held.arguments["run_dir"].endswith(
        "continued/base-detect_memorize-retention")
    assert {f"init={continued.outputs[0]}", "curriculum.stages=[64]", "optim.retention_loss=100.0", "dropout=0.0",
            "curriculum.max_steps=60"} <= set(held.arguments["overrides"])
    assert held.outputs[0].name == "stage-64"
    held_long = steps["long evaluation detect_memorize holding its memory over noise"]
    assert held_long.inputs == held.outputs and held_long.arguments["max_tokens"] == 2_048_000
    assert "train reasoning to hold its memory over noise" not in steps  # only where the plan asks for it
    reasoning = steps["train reasoning on to 32 segments"]
    assert reasoning.inputs == steps["train reasoning"].outputs and "optim.lr=0.0003" in reasoning.arguments["overrides"]
    first, recall, whole = (steps[f"train reasoning's memory map: {part}"] for part in ("recall-match", "recall", "whole"))
    assert first.inputs == [tmp_path / "results" / "tuning/base-reasoning-phrasing/checkpoints/stage-1"]
    assert "task.subset=\"recall_match\"" in first.arguments["overrides"] and "optim.slot_loss=1.0" in first.arguments[
        "overrides"]
    assert recall.inputs == first.outputs and whole.inputs == recall.outputs  # each part from the one before
    assert "curriculum.stages=[2, 4, 7]" in whole.arguments["overrides"] and whole.outputs[0].name == "stage-7"
    assert whole.arguments["run_dir"].endswith("slots/base-reasoning-whole")


def test_adopting_hand_made_results_records_their_models(tmp_path, capsys):
    import os

    from rmt_lab.reproduce import made_from

    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    gen = next(s for s in steps if s.name == "generalization memorize")
    for path in [*gen.inputs, *gen.outputs]:  # a model and its evaluation, made by hand
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(path.name.encode())
    later = gen.outputs[0].stat().st_mtime + 10
    os.utime(gen.inputs[0], (later, later))  # checkout order: the model looks newer
    assert gen.stale()
    assert main(["reproduce", "--quick", "--adopt", "--results", str(results)]) == 0
    assert "generalization memorize" in capsys.readouterr().out
    assert gen.done(made_from(results), results)



def test_a_finished_step_s_cores_go_to_the_step_still_running(tmp_path, monkeypatch):
    import os
    import time

    results = tmp_path / "results"
    steps = [s for s in plan("quick", results, tmp_path / "figures") if s.name.startswith("train")][:2]
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    budgets = []

    def fake(recipe, arguments, threads, output):
        if arguments["task"] == "memorize":
            return 0  # finishes at once
        budget = output.with_suffix(".threads")
        deadline = time.monotonic() + 120  # generous: a loaded machine may take long to hand the cores over
        while time.monotonic() < deadline and budget.read_text() != "4":
            time.sleep(0.01)
        budgets.append((threads, budget.read_text()))
        return 0

    echoed = []
    assert reproduce(steps, results=results, jobs=2, run=fake, echo=echoed.append) == 0
    assert budgets == [(2, "4")]  # started on its half, then given all four cores
    assert any("now 4 thread(s)" in line for line in echoed)


def test_a_step_starting_after_its_sibling_ended_gets_the_freed_cores(tmp_path, monkeypatch):
    import os
    import time

    from rmt_lab.reproduce import Step

    results = tmp_path / "results"
    steps = [s for s in plan("quick", results, tmp_path / "figures") if s.name.startswith("train")][:2]
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    stale = Step.stale

    def late(self, *args):  # the second step starts well after the first has ended
        if self.arguments["task"] != "memorize":
            time.sleep(0.5)
        return stale(self, *args)

    monkeypatch.setattr(Step, "stale", late)
    budgets = []

    def fake(recipe, arguments, threads, output):
        if arguments["task"] != "memorize":
            budgets.append((threads, output.with_suffix(".threads").read_text()))
        return 0

    echoed = []
    assert reproduce(steps, results=results, jobs=2, run=fake, echo=echoed.append) == 0
    assert budgets == [(2, "4")]  # started on its half, and at once given the half its sibling left
    assert any("now 4 thread(s)" in line for line in echoed)


def test_one_status_line_counts_steps_and_estimates_from_the_last_run(tmp_path):
    import time

    results = tmp_path / "results"
    steps = [s for s in plan("quick", results, tmp_path / "figures") if s.name.startswith("train")]
    results.mkdir(parents=True)
    (results / "reproduce-quick.json").write_text(json.dumps({"steps": [{"step": s.name, "seconds": 600.0} for s in steps]}))
    lines = []

    def slow(recipe, arguments, threads, output):
        time.sleep(0.2)
        return Recorder(steps)(recipe, arguments)

    assert reproduce(steps, results=results, run=slow, echo=lambda s: None, status=lines.append,
                     status_every=0.05) == 0
    assert lines and all(line.startswith("reproduce: ") for line in lines)
    assert any(f"0/{len(steps)} done, 1 running, {len(steps) - 1} to start" in line for line in lines)
    assert "~30 min of step time left" in lines[0]  # three steps of 10 minutes, the first just begun


def test_a_step_runs_its_recipe_in_a_fresh_process_with_its_log(tmp_path):
    from rmt_lab.reproduce import _run_process

    log = tmp_path / "logs" / "flops.log"
    arguments = {"out": str(tmp_path / "bench"), "models": ["opt-125m"], "lengths": [512, 2048], "ratio_tokens": 2048}
    assert _run_process("bench_flops", arguments, 1, log) == 0
    assert (tmp_path / "bench" / "flops.parquet").is_file() and "full_over_rmt" in log.read_text()
    assert _run_process("bench_flops", {**arguments, "models": ["opt-9000"]}, 1, log) == 1
    assert "opt-9000" in log.read_text()  # the error, in the step's log


def test_a_long_evaluation_is_done_only_when_it_reaches_its_last_length(tmp_path):
    import pandas as pd

    results = tmp_path / "results"
    step = next(s for s in plan("base", results, tmp_path / "figures") if s.name == "long evaluation reasoning")
    for path in step.inputs:
        path.mkdir(parents=True)
    finished_long_evaluation(step.arguments)
    assert step.done()
    table = pd.read_parquet(step.outputs[0])
    table[table["n_segments"] < table["n_segments"].max()].to_parquet(step.outputs[0])  # stopped before 2M
    assert not step.done()
    table.assign(n_samples=table["n_samples"] - 1).to_parquet(step.outputs[0])  # a sample short everywhere
    assert not step.done()


def test_a_model_not_kept_is_not_remade_for_evaluations_recorded_from_it(tmp_path, capsys):
    from rmt_lab.reproduce import step_lines

    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    reproduce(steps, results=results, run=Recorder(steps), echo=lambda s: None)
    train = next(s for s in steps if s.name == "train memorize")
    readers = [s for s in steps if train.outputs[0] in s.inputs]
    assert readers
    train.outputs[0].unlink()  # the checkpoint is not kept with the results
    assert "train memorize (not needed)" in "\n".join(step_lines(steps, results))
    again = Recorder(steps)
    reproduce(steps, results=results, run=again, echo=lambda s: None)
    assert again.calls == [call(next(s for s in steps if s.name == "figures"))]
    forced = Recorder(steps)  # an evaluation redone needs its model: make's rule, as for a missing file
    reproduce(steps, force=[readers[0].name], results=results, run=forced, echo=lambda s: None)
    assert call(train, resume=True) in forced.calls and call(readers[0]) in forced.calls


def test_adopting_results_whose_model_is_gone_keeps_them_until_it_is_remade(tmp_path, capsys):
    from rmt_lab.reproduce import made_from, step_lines

    results = tmp_path / "results"
    steps = plan("quick", results, tmp_path / "figures")
    gen = next(s for s in steps if s.name == "generalization memorize")
    train = next(s for s in steps if s.name == "train memorize")
    gen.outputs[0].parent.mkdir(parents=True, exist_ok=True)
    gen.outputs[0].write_bytes(b"made by hand")  # its model was not kept
    assert "train memorize (to do)" in "\n".join(step_lines(steps, results))
    assert main(["reproduce", "--quick", "--adopt", "--results", str(results)]) == 0
    assert "generalization memorize" in capsys.readouterr().out
    assert made_from(results)[gen.key(results)] == {}
    lines = "\n".join(step_lines(steps, results))
    # the other evaluations of the same model were never made: the model is still needed for them
    assert "generalization memorize (done)" in lines and "train memorize (to do)" in lines
    train.outputs[0].mkdir(parents=True)
    (train.outputs[0] / "model.safetensors").write_bytes(b"retrained")
    assert not gen.done(made_from(results), results)  # a remade model makes the kept results stale
