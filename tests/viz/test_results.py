"""`rmt-lab figures`: draws what the results folder holds, names what is missing and the command that makes it."""

import json

import pytest

from rmt_lab.cli import main
from rmt_lab.viz import figure_names, missing_inputs, render_figures
from tests.viz import helpers


@pytest.fixture
def results(tmp_path):
    """A results folder with the FLOP table, one memorize run (metrics + generalization) and nothing else."""
    root = tmp_path / "results"
    (root / "bench").mkdir(parents=True)
    helpers.flops_table().to_parquet(root / "bench" / "flops.parquet")
    run = root / "runs" / "quick-memorize"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": {"task": "memorize"}}))
    helpers.metrics_table().to_parquet(run / "metrics.parquet")
    helpers.generalization_table(tasks=("memorize",)).to_parquet(run / "generalization.parquet")
    return root


def test_render_draws_what_is_there_and_reports_the_rest(results, tmp_path):
    out = tmp_path / "figures"
    report = {r.name: r for r in render_figures(results, out)}
    assert set(report) == set(figure_names())
    assert sorted(p.name for p in report["fig3_flops"].files) == ["fig3_flops.png", "fig3_flops.svg"]
    assert (out / "quick" / "training_curves.png").is_file()  # a configuration's figures in its own folder
    gen = report["fig5_generalization"]  # memorize only: drawn, and the two other tasks are named
    assert {p.name for p in gen.files} >= {"fig5_generalization.png", "fig5_generalization_heatmap.png"}
    missing = [str(m) for m in gen.missing]
    assert len(missing) == 2 and "quick-reasoning/generalization.parquet" in missing[1]
    assert "rmt-lab train --config quick --task reasoning" in missing[1]
    assert "rmt-lab eval generalization --run" in missing[1]
    fig1 = report["fig1_accuracy_vs_length"]
    assert not fig1.files and f"rmt-lab eval long --run-dir {results}/runs/quick-memorize" in str(fig1.missing[0])
    assert "rmt-lab bench memory" in str(report["memory_vs_length"].missing[0])
    trace = report["fig6_memory_operations"].missing[0].command
    assert trace.startswith("rmt-lab reproduce --quick") and trace.endswith("--force 'trace reasoning'")
    # every hint is a command line the CLI accepts
    import shlex

    from rmt_lab.cli import build_parser

    hints = [m.command for r in report.values() for m in r.missing]
    for hint in {part for h in hints for part in h.split(" && ") if part.startswith("rmt-lab ")}:
        build_parser().parse_args(shlex.split(hint)[1:])
    assert all(r.error is None for r in report.values())


def test_a_broken_table_fails_one_figure_only(results, tmp_path):
    (results / "bench" / "flops.parquet").write_text("not parquet")
    report = {r.name: r for r in render_figures(results, tmp_path / "out")}
    assert report["fig3_flops"].error and not report["fig3_flops"].files
    assert report["training_curves"].files


def test_missing_inputs_lists_commands(results):
    missing = missing_inputs(results)
    assert missing["fig3_flops"] == [] and missing["quick/training_curves"] == []
    assert "rmt-lab bench memory" in str(missing["memory_vs_length"][0])


def test_cli_figures(results, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figures", "--results", str(results), "--out", str(out), "--only", "fig3_flops"]) == 0
    text = capsys.readouterr().out
    assert "drew     fig3_flops" in text and (out / "fig3_flops.svg").is_file()
    assert main(["figures", "--results", str(results), "--out", str(out), "--strict",
                 "--only", "fig5_generalization", "memory_vs_length"]) == 1
    text = capsys.readouterr().out
    assert "make it with: rmt-lab bench memory" in text and "partial  quick/fig5_generalization" in text
    assert main(["figures", "--results", str(results), "--list"]) == 0
    assert "fig3_flops: ready" in capsys.readouterr().out


def test_cli_figures_bad_input(tmp_path, capsys):
    assert main(["figures", "--results", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["figures", "--results", str(empty), "--out", str(tmp_path / "o")]) == 1
    text = capsys.readouterr().out
    assert "0 of" in text and "rmt-lab bench flops" in text
    assert main(["figures", "--results", str(empty), "--only", "fig9"]) == 2
    assert "unknown figures ['fig9']" in capsys.readouterr().err


def test_trace_figures_from_a_recorded_trace_folder(tmp_path):
    """The wiring to rmt_lab.trace's real files: a tiny RMT traced on 4-segment reasoning samples."""
    pytest.importorskip("rmt_lab.trace", reason="rmt_lab.trace is not in this checkout yet")
    from rmt_lab.model import RecurrentWrapper, RMTConfig
    from rmt_lab.tasks import TaskConfig, TaskGenerator
    from rmt_lab.trace import TraceConfig, collect_memory_states, probe_memory, record

    model = RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(num_mem_tokens=4, segment_size=16, num_classes=6))
    generator = TaskGenerator(TaskConfig(task="reasoning", segment_size=16, length=4, unit="segments"))
    samples = [generator.sample("test", i) for i in range(8)]
    folder = tmp_path / "results" / "traces" / "tiny-reasoning"
    record(model.eval(), samples, TraceConfig(segments="all", keep_memory=True), out=folder)
    states = collect_memory_states(model, samples)
    probe_memory(states["states"], states["labels"], states["fact_segment"], n_classes=6, steps=5).to_parquet(
        folder / "probe.parquet")
    names = ["fig6_memory_operations", "read_write_profile", "write_precision", "memory_trajectory", "probe_accuracy"]
    report = render_figures(tmp_path / "results", tmp_path / "figures", only=names, formats=("png",))
    assert [(r.name, r.error, r.missing) for r in report] == [(n, None, []) for n in names]
    assert all(r.files and r.files[0].stat().st_size > 10_000 for r in report)


def test_memory_size_sweep_joins_the_main_run_at_the_sweep_length(tmp_path):
    import pandas as pd

    from rmt_lab.viz.results import _memory_sweep_inputs

    results = tmp_path / "results"
    for folder, memory, tokens in ((results / "sweeps" / "memory" / "quick-memorize-m2", 2, [128_000]),
                                   (results / "runs" / "quick-memorize", 4, [64_000, 128_000])):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"task": {"task": "memorize"},
                                                        "rmt": {"num_mem_tokens": memory}}))
        pd.DataFrame({"task": "memorize", "tokens": tokens, "accuracy": 0.5, "n_samples": 8}).to_parquet(
            folder / "long_eval.parquet")
    table, missing = _memory_sweep_inputs(results, "quick")
    assert not missing and sorted(zip(table["num_mem_tokens"], table["tokens"])) == [(2, 128_000), (4, 128_000)]
    report = render_figures(results, tmp_path / "figures", only=["memory_size_sweep"], formats=("png",))
    assert [p.name for p in report[0].files] == ["memory_size_sweep.png"] and report[0].config == "quick"


def test_figure_1_draws_runs_carried_on_to_longer_stages_beside_their_runs(tmp_path):
    import pandas as pd

    from rmt_lab.viz.results import _long_eval_inputs

    results = tmp_path / "results"
    for folder, trained in ((results / "runs" / "quick-detect_memorize", 7),
                            (results / "continued" / "quick-detect_memorize", 32),
                            (results / "continued" / "quick-detect_memorize-retention", 32)):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"task": {"task": "detect_memorize"}}))
        pd.DataFrame({"task": "detect_memorize", "tokens": [16_000, 32_000], "accuracy": 0.5, "n_samples": 8,
                      "trained_segments": trained, "retention_loss": 100.0 * folder.name.endswith("retention"),
                      "peak_mib": 600.0}).to_parquet(folder / "long_eval.parquet")
    table, _ = _long_eval_inputs(results, "quick")
    models = table.groupby(["trained_segments", "retention_loss"]).size().to_dict()
    assert models == {(7, 0.0): 2, (32, 0.0): 2, (32, 100.0): 2}
    pd.DataFrame({"task": "detect_memorize", "tokens": [10_240_000], "accuracy": 1.0, "n_samples": 4,
                  "trained_segments": 7, "peak_mib": 640.0}).to_parquet(
        results / "runs" / "quick-detect_memorize" / "long_eval_beyond.parquet")
    table, _ = _long_eval_inputs(results, "quick")  # a length past the main evaluation joins its model's curve
    assert sorted(table.loc[table["trained_segments"] == 7, "tokens"]) == [16_000, 32_000, 10_240_000]


def test_fact_positions_read_runs_carried_on_to_longer_stages_with_their_training_length(tmp_path):
    import pandas as pd

    from rmt_lab.viz.results import _fact_position_inputs
    from tests.train.helpers import tiny_experiment

    results = tmp_path / "results"
    config = tiny_experiment(task="detect_memorize").to_dict()
    for folder, trained in ((results / "runs" / "quick-detect_memorize", 7),
                            (results / "continued" / "quick-detect_memorize", 32)):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        pd.DataFrame({"index": range(4), "n_segments": 8, "tokens": 128, "correct": True}).to_parquet(
            folder / "long_eval_samples.parquet")
        pd.DataFrame({"task": "detect_memorize", "tokens": [128], "trained_segments": trained}).to_parquet(
            folder / "long_eval.parquet")
    samples, missing = _fact_position_inputs(results, "quick")
    assert not missing and samples.groupby("trained_segments").size().to_dict() == {7: 4, 32: 4}
    assert samples["last_fact_segment"].between(0, 7).all() and (samples["task"] == "detect_memorize").all()


def test_training_length_reads_every_model_of_a_task(tmp_path):
    import pandas as pd

    from rmt_lab.viz.results import _training_length_inputs

    results = tmp_path / "results"
    run, continued = results / "runs" / "quick-detect_memorize", results / "continued" / "quick-detect_memorize"
    for folder in (run, continued):
        folder.mkdir(parents=True)
    assert _training_length_inputs(results, "quick")[0] is None  # nothing evaluated: the command that makes it

    def evaluated(path, trained):
        pd.DataFrame({"tokens": [16_000], "n_segments": 250, "accuracy": 0.5, "n_samples": 8,
                      "trained_segments": trained}).to_parquet(path)

    evaluated(run / "long_eval.parquet", 7)
    table, missing = _training_length_inputs(results, "quick")  # one model of the task: nothing to compare yet
    assert table is None and missing[0].path.endswith("continued/quick-<task>/long_eval.parquet")
    evaluated(continued / "long_eval.parquet", 32)
    evaluated(continued / "long_eval_stage16.parquet", 16)
    pd.DataFrame({"index": [0]}).to_parquet(continued / "long_eval_stage16_samples.parquet")  # not a table of lengths
    table, missing = _training_length_inputs(results, "quick")
    assert not missing and sorted(table["trained_segments"]) == [7, 16, 32]
    assert (table["task"] == "detect_memorize").all()
