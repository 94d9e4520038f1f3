"""The curriculum trainer on tiny settings: learning, resume, stage hand-over, failures."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rmt_lab.config import ConfigError
from rmt_lab.model import RecurrentWrapper, RMTConfig
from rmt_lab.train import (
    Callback, CheckpointError, CurriculumConfig, OptimConfig, Trainer, TrainingDiverged, generalization_matrix, run_experiment,
)
from rmt_lab.train.trainer import step_stats
from tests.train.helpers import slot_experiment, tiny_experiment


def test_tiny_run_learns_memorize_above_chance(tmp_path):
    config = tiny_experiment(max_steps=60, optim=dataclasses.replace(tiny_experiment().optim, batch_size=16))
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, eval_every=30, eval_samples=64,
                                                                 checkpoint_every=100))
    metrics = run_experiment(config, tmp_path / "run", callbacks=[])
    val = metrics[metrics["kind"] == "val"]["accuracy"]
    assert val.iloc[-1] > 0.5, f"validation accuracy {val.tolist()} (chance is 1/6)"
    assert set(metrics.columns) >= {"step", "stage", "n_segments", "loss", "accuracy", "lr", "tokens_per_s",
                                    "wall_time"}
    assert (tmp_path / "run" / "checkpoints" / "stage-1" / "model.safetensors").is_file()
    assert "| 1 | 1 |" in (tmp_path / "run" / "README.md").read_text()


class _Interrupt(Callback):
    def __init__(self, at):
        self.at = at

    def on_log(self, trainer, row):
        if row["global_step"] == self.at:
            raise KeyboardInterrupt


def test_resumed_run_equals_uninterrupted(tmp_path):
    config = tiny_experiment(stages=(1, 2), max_steps=8)
    whole = run_experiment(config, tmp_path / "whole", callbacks=[])
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "cut", callbacks=[_Interrupt(at=12)])  # mid stage 2
    assert json.loads((tmp_path / "cut" / "checkpoints" / "LATEST").read_text())["checkpoint"] == "step-0000011"
    with pytest.raises(CheckpointError, match="already holds a run"):
        run_experiment(config, tmp_path / "cut", callbacks=[])
    resumed = run_experiment(config, tmp_path / "cut", resume=True, callbacks=[])
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "stage-2" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "stage-2" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cols = ["kind", "stage", "step", "global_step", "loss", "accuracy", "lr"]
    assert whole[cols].equals(resumed[cols])


def test_finished_run_carries_on_to_appended_stages(tmp_path):
    run_experiment(tiny_experiment(stages=(1, 2), max_steps=4), tmp_path / "run", callbacks=[])
    first = load_file(str(tmp_path / "run" / "checkpoints" / "stage-2" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"another config \(curriculum.stages"):
        run_experiment(tiny_experiment(stages=(1, 3), max_steps=4), tmp_path / "run", resume=True, callbacks=[])
    longer = run_experiment(tiny_experiment(stages=(1, 2, 3), max_steps=4), tmp_path / "run", resume=True,
                            callbacks=[])
    assert sorted(longer[longer.kind == "train"].groupby("stage").n_segments.first()) == [1, 2, 3]
    assert len(longer[(longer.kind == "train") & (longer.n_segments == 3)]) == 2  # 4 steps, logged every 2
    kept = load_file(str(tmp_path / "run" / "checkpoints" / "stage-2" / "model.safetensors"))
    assert all(torch.equal(first[k], kept[k]) for k in first)  # the stages already trained are not redone
    assert json.loads((tmp_path / "run" / "config.json").read_text())["curriculum"]["stages"] == [1, 2, 3]


class _StageStart(Callback):
    def __init__(self):
        self.weights = {}

    def on_stage_start(self, trainer, n_segments):
        self.weights[n_segments] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_each_stage_starts_from_the_previous_stage_weights(tmp_path):
    probe = _StageStart()
    run_experiment(tiny_experiment(stages=(1, 3), max_steps=4), tmp_path / "run", callbacks=[probe])
    stage1 = RecurrentWrapper.from_pretrained(tmp_path / "run" / "checkpoints" / "stage-1").state_dict()
    assert all(torch.equal(probe.weights[3][k], v) for k, v in stage1.items())
    assert not all(torch.equal(probe.weights[1][k], v) for k, v in stage1.items())


def test_a_run_may_start_from_another_run_s_stage_weights(tmp_path):
    run_experiment(tiny_experiment(stages=(1,), max_steps=4), tmp_path / "first", callbacks=[])
    stage1 = tmp_path / "first" / "checkpoints" / "stage-1"
    probe = _StageStart()
    run_experiment(tiny_experiment(stages=(3,), max_steps=2, init=str(stage1)), tmp_path / "next", callbacks=[probe])
    weights = RecurrentWrapper.from_pretrained(stage1).state_dict()
    assert all(torch.equal(probe.weights[3][k], v) for k, v in weights.items())
    saved = json.loads((tmp_path / "next" / "config.json").read_text())
    assert saved["init"] == str(stage1)  # the run says which weights it started from
    with pytest.raises(ConfigError, match="not a saved RMT"):
        tiny_experiment(init=str(tmp_path))
    other = dataclasses.replace(tiny_experiment().rmt, num_mem_tokens=3)
    with pytest.raises(CheckpointError, match="another rmt"):
        run_experiment(tiny_experiment(init=str(stage1), rmt=other), tmp_path / "bad", callbacks=[])


def test_generalization_table_shape_and_values(tmp_path):
    run_experiment(tiny_experiment(stages=(1, 2), max_steps=4), tmp_path / "run", callbacks=[])
    table = generalization_matrix(tmp_path / "run", n_samples=8)
    assert len(table) == 2 * 4  # 2 checkpoints x eval lengths 1..4
    assert sorted(table["trained_segments"].unique()) == [1, 2]
    assert sorted(table["eval_segments"].unique()) == [1, 2, 3, 4]
    assert table["accuracy"].between(0, 1).all()


class _Poison(Callback):
    def on_log(self, trainer, row):
        if row["global_step"] == 4:
            with torch.no_grad():
                trainer.model.classifier.weight.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss is nan .* Last good checkpoint: .*step-0000003"):
        run_experiment(tiny_experiment(max_steps=8), tmp_path / "run", callbacks=[_Poison()])
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-0000003" / "state.json").read_text())
    assert state["loop"]["global_step"] == 3


def test_bad_input_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'sorting'.*memorize"):
        tiny_experiment(task="sorting")
    with pytest.raises(ConfigError, match=r"stages=\[1, 3, 2\] must be strictly increasing"):
        CurriculumConfig(stages=(1, 3, 2))
    with pytest.raises(ConfigError, match=r"noise_prefix=-1 must be an integer >= 0"):
        CurriculumConfig(noise_prefix=-1)
    run_experiment(tiny_experiment(max_steps=3), tmp_path / "run", callbacks=[])
    other = tiny_experiment(max_steps=3, backbone="tiny-gpt2")
    with pytest.raises(CheckpointError, match=r"another config \(backbone: this run has 'tiny-gpt2'"):
        Trainer(other, tmp_path / "run", callbacks=[], resume=True).setup()
    # a checkpoint folder from another backbone, under this run's config
    (tmp_path / "run2").mkdir()
    trainer = Trainer(tiny_experiment(max_steps=3), tmp_path / "run2", callbacks=[], resume=True)
    (tmp_path / "run2" / "checkpoints").mkdir()
    import shutil

    shutil.copytree(tmp_path / "run" / "checkpoints" / "stage-1", tmp_path / "run2" / "checkpoints" / "step-0000001")
    meta_path = tmp_path / "run2" / "checkpoints" / "step-0000001" / "rmt_config.json"
    meta = json.loads(meta_path.read_text())
    meta["backbone_config"]["num_hidden_layers"] = 1
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "run2" / "checkpoints" / "LATEST").write_text('{"checkpoint": "step-0000001"}')
    with pytest.raises(CheckpointError, match="another backbone_config: num_hidden_layers: this run has 2, the checkpoint has 1"):
        trainer.setup()


def test_a_run_resumes_from_its_last_stage_folder_alone(tmp_path):
    """A clone keeps only the stage folders (small with adapters): the curriculum goes on from the last one."""
    import shutil

    config = tiny_experiment(stages=(1, 2, 3), max_steps=4)
    whole = run_experiment(config, tmp_path / "whole", callbacks=[])
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "cut", callbacks=[_Interrupt(at=10)])  # mid stage 3
    root = tmp_path / "cut" / "checkpoints"
    (root / "LATEST").unlink()
    for folder in root.glob("step-*"):
        shutil.rmtree(folder)
    resumed = run_experiment(config, tmp_path / "cut", resume=True, callbacks=[])
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "stage-3" / "model.safetensors"))
    b = load_file(str(root / "stage-3" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    cols = ["kind", "stage", "step", "global_step", "loss", "accuracy", "lr"]
    assert whole[cols].equals(resumed[cols])


def test_a_resume_may_change_how_the_run_executes_but_not_what_it_learns(tmp_path):
    config = tiny_experiment(max_steps=3)
    run_experiment(config, tmp_path / "run", callbacks=[])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["optim"]["label_smoothing"]  # a run begun before the setting existed reads it as its default
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    leaner = dataclasses.replace(config, run=dataclasses.replace(config.run, gradient_checkpointing=True,
                                                                  checkpoint_every=7))
    Trainer(leaner, tmp_path / "run", callbacks=[], resume=True).setup()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["checkpoint_every"] == 7
    smoothed = dataclasses.replace(config, optim=dataclasses.replace(config.optim, label_smoothing=0.1))
    with pytest.raises(CheckpointError, match=r"optim.label_smoothing: this run has 0.1, the checkpoint has 0.0"):
        Trainer(smoothed, tmp_path / "run", callbacks=[], resume=True).setup()


def test_label_smoothing_keeps_the_loss_above_its_floor(tmp_path):
    with pytest.raises(ConfigError, match=r"label_smoothing=1.0 must lie in \[0, 1\)"):
        dataclasses.replace(tiny_experiment().optim, label_smoothing=1.0)
    config = tiny_experiment(max_steps=4)
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, label_smoothing=0.5))
    metrics = run_experiment(config, tmp_path / "run", callbacks=[])
    # with half the target mass spread over 5 other classes the loss cannot fall below that target's entropy
    q = torch.tensor([0.5 + 0.1] + [0.1] * 5)
    floor = float(-(q * q.log()).sum())
    train = metrics[metrics["kind"] == "train"]
    assert (train["loss"] >= floor - 1e-4).all()
    assert set(train["mixed_precision"]) == {"no"}


def test_noise_prefix_starts_batches_from_the_memory_noise_leaves(tmp_path):
    config = tiny_experiment(stages=(1, 2), max_steps=8)
    config = dataclasses.replace(config, curriculum=dataclasses.replace(config.curriculum, noise_prefix=3))
    trainer = Trainer(config, tmp_path / "probe", callbacks=[])
    trainer.setup()
    gen = trainer.generator(1)
    streamed = []
    stream = trainer.model.stream
    trainer.model.stream = lambda segments, **kw: stream(streamed.append(len(segments)) or segments, **kw)
    drawn = []
    for step in range(12):
        trainer.state["global_step"] = step
        memory = trainer._noise_memory(gen, 4)
        drawn.append(memory)
        if memory is not None:
            assert memory.shape == trainer.model.init_memory(4).shape and not memory.requires_grad
            assert not torch.allclose(memory, trainer.model.init_memory(4))
    assert any(m is None for m in drawn) and any(m is not None for m in drawn)
    assert set(streamed) <= {1, 2, 3} and len(streamed) == sum(m is not None for m in drawn)
    shared = next(m for m in drawn if m is not None)
    assert torch.equal(shared[0], shared[3])  # one noise run, its memory shared by the batch
    trainer.state["global_step"] = next(i for i, m in enumerate(drawn) if m is not None)
    assert torch.equal(trainer._noise_memory(gen, 4), drawn[trainer.state["global_step"]])  # the seed and step decide
    trainer.model.stream = stream
    trainer.cleanup()
    # a run with noise prefixes resumes to the same weights
    whole = run_experiment(config, tmp_path / "whole", callbacks=[])
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "cut", callbacks=[_Interrupt(at=12)])
    resumed = run_experiment(config, tmp_path / "cut", resume=True, callbacks=[])
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "stage-2" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "stage-2" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole["loss"].equals(resumed["loss"])


def _carried_batch(config, tmp_path, n_segments):
    """A set-up trainer, its first training batch of 16 at `n_segments`, the samples and the model's memory after
    each segment; checks the batch's `carried` against the samples."""
    trainer = Trainer(config, tmp_path / "run", callbacks=[])
    trainer.setup()
    gen = trainer.generator(n_segments)
    batch = trainer._batch(gen, "train", 0, 16)
    samples = [gen.sample("train", i) for i in range(16)]
    assert batch["carried"].tolist() == [[n in s.carried_segments for s in samples] for n in range(n_segments)]
    out = trainer.model(batch["input_ids"], batch["attention_mask"], keep=("memory",))
    return trainer, batch, samples, out


def test_slot_loss_is_the_heads_cross_entropy_on_memory_that_carries_the_facts(tmp_path):
    config = slot_experiment(stages=(3,), max_steps=1)
    assert config.rmt.slot_classes == (7, 7, 7, 7)  # taken from the task
    trainer, batch, samples, out = _carried_batch(config, tmp_path, 3)
    assert batch["carried"].any() and not batch["carried"].all()
    read = [(head(out.segments[n]["memory"][b, k]), batch["slot_targets"][b, k])
            for n in range(3) for b in range(16) if batch["carried"][n, b]
            for k, head in enumerate(trainer.model.slot_heads)]
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[None], target[None])
                            for logits, target in read]).mean()
    named = [logits.argmax() == target for logits, target in read]
    got, accuracy = trainer._slot_loss(out.segments, batch["slot_targets"], batch["carried"])
    assert torch.allclose(got, expected, atol=1e-6)
    assert accuracy == pytest.approx(float(torch.stack(named).float().mean()))
    none = torch.zeros_like(batch["carried"])
    loss, accuracy = trainer._slot_loss(out.segments, batch["slot_targets"], none)
    assert float(loss.detach()) == 0.0 and math.isnan(accuracy)


def test_memory_change_is_the_relative_drift_over_noise_segments_after_the_facts(tmp_path):
    base = tiny_experiment(stages=(4,), max_steps=1)
    config = dataclasses.replace(base, optim=dataclasses.replace(base.optim, retention_loss=1.0))
    trainer, batch, samples, out = _carried_batch(config, tmp_path, 4)
    ratios = []
    for b, s in enumerate(samples):
        for n in range(2, 4):
            if {n - 2, n - 1, n} <= set(s.carried_segments):  # noise after the fact and its settling segment
                assert all(n not in f.segments for f in s.facts) and n not in s.question.segments
                before, after = out.segments[n - 1]["memory"][b], out.segments[n]["memory"][b]
                ratios.append(float(((after - before).pow(2).sum() / before.pow(2).sum()).detach()))
    assert len(ratios) > 0
    got, measured = trainer._memory_change(out.segments, batch["carried"])
    assert measured and float(got.detach()) == pytest.approx(sum(ratios) / len(ratios), rel=1e-5)
    got.backward()  # the earlier memory is the target: gradients reach the weights through the later one only
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
    none, measured = trainer._memory_change(out.segments, torch.zeros_like(batch["carried"]))
    assert float(none.detach()) == 0.0 and not measured


def test_a_run_with_the_retention_loss_logs_memory_change_and_old_log_windows_still_read(tmp_path):
    base = tiny_experiment(stages=(5,), max_steps=4)
    rows = run_experiment(dataclasses.replace(base, optim=dataclasses.replace(base.optim, retention_loss=1.0)),
                          tmp_path / "held", callbacks=[])
    train = rows[rows["kind"] == "train"]
    assert len(train) == 2 and train["memory_change"].gt(0).all() and rows["slot_loss"].isna().all()
    plain = run_experiment(base, tmp_path / "plain", callbacks=[])
    assert plain["memory_change"].isna().all()
    # a checkpoint's window from before the entries were named holds lists, some without the later fields
    assert step_stats([0.5, 1.0, 64, 2.0]) == pytest.approx(
        {"loss": 0.5, "accuracy": 1.0, "tokens": 64, "seconds": 2.0, "slot_loss": math.nan,
         "slot_accuracy": math.nan, "memory_change": math.nan}, nan_ok=True)
    # a step whose batch had no memory for the slot heads counts in neither slot mean
    assert math.isnan(step_stats({"loss": 0.5, "slot_loss": 0.0, "slot_accuracy": math.nan})["slot_loss"])
    assert step_stats([0.5, 1.0, 64, 2.0, 0.3, 0.5])["slot_loss"] == 0.3


def test_a_run_teaches_slot_heads_and_may_start_from_a_model_without_them(tmp_path):
    plain_rows = run_experiment(slot_experiment((1,), 2, slot_loss=0.0), tmp_path / "plain", callbacks=[])
    assert plain_rows[["slot_loss", "slot_accuracy"]].isna().all().all()
    plain = tmp_path / "plain" / "checkpoints" / "stage-1"
    rows = run_experiment(slot_experiment(stages=(2, 3), max_steps=3, init=str(plain)), tmp_path / "slots",
                          callbacks=[])
    # training rows log the heads' own loss and accuracy; evaluation rows have none
    train = rows[rows["kind"] == "train"]
    assert len(train) and train["slot_loss"].gt(0).all() and train["slot_accuracy"].between(0, 1).all()
    assert rows.loc[rows["kind"] != "train", "slot_accuracy"].isna().all()
    stage2 = load_file(str(tmp_path / "slots" / "checkpoints" / "stage-2" / "model.safetensors"))
    stage3 = load_file(str(tmp_path / "slots" / "checkpoints" / "stage-3" / "model.safetensors"))
    heads = [k for k in stage3 if k.startswith("slot_heads.")]
    assert len(heads) == 8 and any(not torch.equal(stage2[k], stage3[k]) for k in heads)
    # Evaluation never reads the heads: the model answers from its classifier, as one without them.
    model = RecurrentWrapper.from_pretrained(tmp_path / "slots" / "checkpoints" / "stage-3")
    assert model.config.slot_classes == (7, 7, 7, 7) and model(torch.randint(5, 100, (2, 70))).logits.shape == (2, 6)


def test_a_run_may_start_from_a_model_trained_with_other_bptt_depth_or_dropout(tmp_path):
    run_experiment(slot_experiment((1,), 2, slot_loss=0.0), tmp_path / "full", callbacks=[])
    full = tmp_path / "full" / "checkpoints" / "stage-1"
    config = slot_experiment((2,), 1, slot_loss=0.0, init=str(full))
    trainer = Trainer(dataclasses.replace(config, rmt=dataclasses.replace(config.rmt, bptt_depth=1)),
                      tmp_path / "truncated", callbacks=[])
    trainer.setup()
    saved = load_file(str(full / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in trainer.model.state_dict().items() if k in saved)
    quiet = Trainer(dataclasses.replace(config, dropout=0.0), tmp_path / "no-dropout", callbacks=[])
    quiet.setup()  # a model trained with dropout may go on without it
    assert all(torch.equal(v, saved[k]) for k, v in quiet.model.state_dict().items() if k in saved)
    wider = dataclasses.replace(config.rmt, num_mem_tokens=5)
    with pytest.raises(CheckpointError, match="num_mem_tokens"):
        Trainer(dataclasses.replace(config, rmt=wider), tmp_path / "wider", callbacks=[]).setup()


def test_a_memory_gate_starts_open_on_a_model_without_one_and_trains_at_its_own_lr(tmp_path):
    run_experiment(slot_experiment((1,), 2, slot_loss=0.0), tmp_path / "plain", callbacks=[])
    plain = tmp_path / "plain" / "checkpoints" / "stage-1"
    config = slot_experiment((2,), 2, slot_loss=0.0, init=str(plain))
    config = dataclasses.replace(config, rmt=dataclasses.replace(config.rmt, memory_gate=True),
                                 optim=dataclasses.replace(config.optim, retention_loss=1.0, gate_lr_scale=50.0))
    trainer = Trainer(config, tmp_path / "gated", callbacks=[])
    trainer.setup()
    saved = load_file(str(plain / "model.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in trainer.model.state_dict().items() if k in saved)
    gate = trainer.model.cell.memory_gate
    assert torch.all(gate.weight == 0) and gate.bias.item() == 6.0  # open
    trainer._train_step(trainer.generator(2))
    base, gate_group = trainer.optimizer.param_groups
    assert gate_group["lr"] == pytest.approx(50.0 * base["lr"]) and base["lr"] > 0
    trainer.train()
    gated = tmp_path / "gated" / "checkpoints" / "stage-2"
    assert not torch.equal(load_file(str(gated / "model.safetensors"))["cell.memory_gate.bias"], torch.tensor([6.0]))
    # a gate shapes what memory holds: a model that has one does not load into one without it
    with pytest.raises(CheckpointError, match="memory_gate"):
        Trainer(slot_experiment((2,), 1, slot_loss=0.0, init=str(gated)), tmp_path / "ungated", callbacks=[]).setup()


def test_slot_settings_that_cannot_train_fail_clearly():
    with pytest.raises(ConfigError, match=r"OptimConfig.retention_loss=-1.0 must be >= 0"):
        OptimConfig(retention_loss=-1.0)
    with pytest.raises(ConfigError, match=r"OptimConfig.gate_lr_scale=0.0 must be > 0"):
        OptimConfig(gate_lr_scale=0.0)
    with pytest.raises(ConfigError, match="RMTConfig.memory_gate='yes' must be true or false"):
        RMTConfig(memory_gate="yes")
    with pytest.raises(ConfigError, match=r"task 'memorize' has none; tasks with one: \['reasoning'\]"):
        tiny_experiment(optim=dataclasses.replace(tiny_experiment().optim, slot_loss=1.0))
    with pytest.raises(ConfigError, match="slot heads that nothing trains"):
        slot_experiment((1,), 1, slot_loss=0.0, slot_classes=(7, 7, 7, 7))
    with pytest.raises(ConfigError, match=r"slot_classes=\[5, 5\] does not match task 'reasoning'"):
        slot_experiment((1,), 1, slot_classes=(5, 5))
    two = dataclasses.replace(slot_experiment((1,), 1, slot_loss=0.0).rmt, num_mem_tokens=2)
    with pytest.raises(ConfigError, match="needs 4 memory tokens; rmt.num_mem_tokens=2"):
        dataclasses.replace(slot_experiment((1,), 1, slot_loss=0.0), rmt=two, optim=OptimConfig(slot_loss=1.0))
    with pytest.raises(ConfigError, match="slot_loss=-1"):
        OptimConfig(slot_loss=-1)
