"""Every experiment callable from a notebook with the CLI's defaults, on tiny settings."""

import inspect
from dataclasses import fields

import pandas as pd
import pytest

import rmt_lab.bench.sweep as sweep
from rmt_lab import recipes
from rmt_lab.bench.flops_sweep import FlopsSweepConfig
from rmt_lab.bench.memory import MemorySweepConfig
from rmt_lab.bench.speed import SpeedSweepConfig
from rmt_lab.cli import build_parser
from rmt_lab.config import ConfigError
from rmt_lab.process import Budget
from rmt_lab.reproduce import plan, reproduce
from rmt_lab.tasks import TaskConfig, TaskGenerator, format_sample
from rmt_lab.tasks.bench import run as streaming_bench
from tests.bench.fakes import FakeRunner

TINY = ["backbone=tiny-bert", "rmt.num_mem_tokens=2", "rmt.segment_size=16", "task.segment_size=16",
        "curriculum.stages=[1,2]", "curriculum.max_steps=2", "curriculum.min_steps=0", "optim.batch_size=4",
        "run.eval_every=2", "run.eval_samples=8", "run.log_every=1", "run.checkpoint_every=2"]


@pytest.mark.parametrize("argv, recipe", [
    (["train"], recipes.train),
    (["eval", "generalization", "--run-dir", "r"], recipes.eval_generalization),
    (["eval", "ablation", "--run-dir", "r"], recipes.eval_ablation),
    (["eval", "long", "--run-dir", "r"], recipes.eval_long),
    (["trace", "--out", "t"], recipes.trace),
    (["probe", "--checkpoint", "c", "--out", "p"], recipes.probe),
    (["bench", "flops"], recipes.bench_flops),
    (["bench", "memory"], recipes.bench_memory),
    (["bench", "speed"], recipes.bench_speed),
    (["demo"], recipes.stream),
    (["figures"], recipes.figures),
    (["reproduce", "--quick"], plan),
    (["data", "bench"], streaming_bench),
    (["data", "export", "--n", "1", "--out", "x"], recipes.export_data),
])
def test_the_cli_shows_the_recipe_defaults(argv, recipe):
    args = vars(build_parser().parse_args(argv))
    # a sequence default is a list on the command line
    shared = {name: list(value) if isinstance(value, tuple) else value
              for name, value in recipes.defaults(recipe).items() if name in args}
    assert shared, "the command shares no option with its recipe"
    # options the CLI leaves unset (None) mean the recipe's default
    assert {k: (args[k] if args[k] is not None else v) for k, v in shared.items()} == shared


@pytest.mark.parametrize("recipe, settings", [
    (recipes.train, None), (recipes.eval_generalization, None), (recipes.eval_ablation, None),
    (recipes.eval_long, None), (recipes.trace, None), (recipes.probe, None), (recipes.stream, None),
    (recipes.trace_overhead, None), (recipes.figures, None), (plan, None), (reproduce, None),
    (recipes.stream_lengths, None), (recipes.preview_data, None), (recipes.export_data, None),
    (recipes.bench_flops, FlopsSweepConfig), (recipes.bench_memory, MemorySweepConfig),
    (recipes.bench_speed, SpeedSweepConfig),
])
def test_the_cli_help_in_a_docstring_names_an_argument_of_the_recipe(recipe, settings):
    # an Args line with a misspelt name would leave its option without help, silently
    helps = recipes.argument_help(recipe)
    takes = set(inspect.signature(recipe).parameters) | {f.name for f in (fields(settings) if settings else ())}
    assert helps and all(helps.values()) and set(helps) <= takes


def test_a_help_text_goes_on_over_its_indented_lines():
    assert recipes.argument_help(recipes.train)["config"] == (
        "named configuration: quick (CPU, minutes), base (the pretrained MiniLM with adapters: hours) or paper (GPU)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return recipes.train("quick", "memorize", tmp_path_factory.mktemp("recipes") / "run", overrides=TINY)


def test_train_then_every_evaluation_from_python(run, tmp_path):
    assert list(run.stage_accuracy().index) == [1, 2]
    gen = recipes.eval_generalization(run.run_dir, max_segments=3, samples=4)
    assert len(gen) == 2 * 3 and (run.run_dir / "generalization.parquet").exists()
    ablation = recipes.eval_ablation(run.run_dir, max_segments=2, samples=4)
    assert set(ablation["trained_segments"]) == {2} and not ablation["carry_memory"].any()
    long = recipes.eval_long(run.run_dir, min_tokens=32, max_tokens=64, samples=2, samples_from=(64, 1),
                             batch_size=2)
    assert list(long["n_segments"]) == [2, 4] and list(long["n_samples"]) == [2, 1]
    checkpoint = run.run_dir / "checkpoints" / "stage-2"
    probe = recipes.probe(checkpoint, tmp_path / "probe.parquet", task="memorize", segments=2, samples=8)
    assert recipes.probe_by_distance(probe).stack().between(0.0, 1.0).all()
    traced = recipes.trace(tmp_path / "trace", checkpoint=checkpoint, segments=2, samples=2)
    assert traced.trace.n_segments == 2 and 0 <= traced.correct <= 2 and len(traced.profile()) >= 2


def test_recipes_refuse_bad_input_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        recipes.eval_long(tmp_path)
    with pytest.raises(ValueError, match="min_tokens <= max_tokens"):
        recipes.long_lengths(64, 32, 16)
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        recipes.experiment_config("quick", "memorize", ["optim.lrr=1"])
    assert recipes.long_lengths(16_000, 64_000, 64) == [250, 500, 1000]
    with pytest.raises(FileNotFoundError, match="results folder .* does not exist"):
        recipes.figures(tmp_path / "nowhere")


def test_task_data_from_python(tmp_path):
    expected = TaskGenerator(TaskConfig(task="reasoning", length=2, segment_size=64))
    text = recipes.preview_data(index=3, split="test", task="reasoning", segments=2, segment_size=64)
    assert text == format_sample(expected.sample("test", 3), expected.tokenizer)
    path = recipes.export_data(tmp_path / "r.parquet", 4, split="test", task="reasoning", segments=2, segment_size=64)
    frame = pd.read_parquet(path)
    assert len(frame) == 4 and list(frame.iloc[3]["input_ids"]) == expected.sample("test", 3).tokens().tolist()


def test_budget_limits_given_replace_the_defaults(tmp_path, monkeypatch):
    budgets = []

    def runner(workload, params, budget, *, time_limit_s):
        budgets.append(budget)
        return FakeRunner()(workload, params, budget, time_limit_s=time_limit_s)

    monkeypatch.setattr(sweep, "run_point", runner)
    recipes.bench_memory(tmp_path, quick=True, progress=False, grace_s=5, rss_limit_gib=2, lengths=[1000],
                         methods=["rmt"], modes=["forward"])
    assert budgets and set(budgets) == {Budget(grace_s=5, rss_limit_mib=2048)}
    # the help states Budget's defaults: the CLI shows it as the options' help
    helps, default = recipes.argument_help(recipes.bench_memory), Budget()
    assert f"(default {default.grace_s:g})" in helps["grace_s"]
    assert f"(default {default.min_tokens_per_s:g})" in helps["min_tokens_per_s"]
    assert f"(default {default.rss_limit_mib / 1024:g})" in helps["rss_limit_gib"]


def test_stream_lengths_measures_each_length_when_it_is_read(monkeypatch):
    measured = []
    monkeypatch.setattr(recipes, "stream", lambda n: measured.append(n) or {"tokens": n})
    rows = recipes.stream_lengths([1000, 2000])
    assert measured == [] and next(rows) == {"tokens": 1000} and measured == [1000]


def test_trace_overhead_measures_each_row_when_it_is_read():
    tables = recipes.trace_overhead(["tiny-bert"], threads=[1], segments=2, repeats=1, pairs=2, tokens=0)
    assert set(tables) == {"wall", "segment", "own_time", "long"} and list(tables["long"]) == []
    (row,) = list(tables["segment"])
    assert row["backbone"] == "tiny-bert" and row["threads"] == 1 and row["traced_ms"] > 0


def test_trace_overhead_long_trace_is_one_row():
    (row,) = recipes.trace_overhead(tokens=2_000, long_backbone="tiny-bert")["long"]
    assert row["backbone"] == "tiny-bert" and row["tokens"] == 2_000 and row["peak_rss_mib"] > 0
