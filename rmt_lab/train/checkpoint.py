"""Resumable checkpoints: weights, optimizer and loop state, published by one atomic pointer flip.

A checkpoint is a folder `checkpoints/step-XXXXXXX/` (during a stage) or `checkpoints/stage-N/` (the
weights a stage of N segments ended with) holding the RMT (`save_pretrained`), `optimizer.safetensors`
(every optimizer tensor), and `state.json` (loop counters, optimizer hyper-parameters, RNG states).
It becomes the run's latest checkpoint only when `checkpoints/LATEST` (written atomically) names it,
so a run killed at any moment resumes from a complete checkpoint. Without LATEST (a clone that keeps
only the stage folders, which are small when the backbone is frozen) a run resumes from its last stage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rmt_lab.config import from_dict, to_dict
from rmt_lab.io import atomic_path, write_json
from rmt_lab.model import RecurrentWrapper, RMTConfig
from rmt_lab.model.backbones import is_dropout_key

LATEST = "LATEST"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit this run."""


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-ready rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    states = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"rng.cuda.{i}"] = s
    return states


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def stage_name(n_segments: int) -> str:
    return f"stage-{n_segments}"


def save_checkpoint(
    root: Path, name: str, model: RecurrentWrapper, optimizer: torch.optim.Optimizer, state: dict, keep_last: int = 1
) -> Path:
    """Write checkpoint folder `root/name`, point LATEST at it, then drop older step folders."""
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    tensors, meta = optimizer_tensors(optimizer)
    tensors.update({k: v.contiguous() for k, v in rng_state().items()})
    with atomic_path(folder / "optimizer.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(folder / "state.json", {"loop": state, "optimizer": meta})
    write_json(root / LATEST, {"checkpoint": folder.name})
    old = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name != folder.name)
    for stale in old[: max(0, len(old) - keep_last + 1)]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def latest_checkpoint(root: Path) -> Path | None:
    """The folder LATEST names; without LATEST the last complete stage folder; None for a new run."""
    pointer = root / LATEST
    if not pointer.is_file():
        stages = [p for p in root.glob("stage-*") if (p / "state.json").is_file() and p.name[6:].isdigit()]
        return max(stages, key=lambda p: int(p.name[6:]), default=None)
    try:
        folder = root / json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{pointer} is corrupt: {err!r}") from err
    if not folder.is_dir():
        raise CheckpointError(f"{pointer} names {folder.name}, which does not exist")
    return folder


def load_weights(folder: Path, model: RecurrentWrapper) -> None:
    """Load the RMT saved in `folder` into `model`, which must have the same backbone and rmt settings, but for
    the slot heads, the memory gate and the settings that shape no weight (`TRAINING_ONLY`, the backbone's
    dropout): only training reads the heads, so a model without them (or with others) may start a run that
    teaches them, its heads starting fresh; a model without a memory gate may start a run with one, the gate
    starting open (the update it was trained with); a model trained with full BPTT may go on with truncated
    BPTT, and one trained with dropout may go on without it."""
    folder = Path(folder)
    try:
        theirs = json.loads((folder / "rmt_config.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {folder} has no readable rmt_config.json: {err!r}") from err
    mine = model.describe()
    fresh = []  # the state-dict prefixes of weights this model adds to the checkpoint's, starting as initialized
    for key in ("backbone", "backbone_config", "rmt"):
        a, b = mine[key], theirs.get(key)
        if key == "rmt" and isinstance(b, dict):
            b = to_dict(from_dict(RMTConfig, b))  # settings added since it was saved read as their defaults
            if b["slot_classes"] != a["slot_classes"]:
                fresh.append("slot_heads.")
            if a["memory_gate"] and not b["memory_gate"]:
                fresh.append("cell.memory_gate.")
                b = {**b, "memory_gate": True}
        if key in ("rmt", "backbone_config") and isinstance(b, dict):
            a, b = _weight_shaping(a), _weight_shaping(b)
        if a != b:
            raise CheckpointError(f"checkpoint {folder} was made with another {key}: {first_difference(a, b)}")
    state = RecurrentWrapper.from_pretrained(folder).state_dict()
    result = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(tuple(fresh))},
                                   strict=not fresh)
    assert all(k.startswith(tuple(fresh)) for k in result.missing_keys) and not result.unexpected_keys, result


# Settings free to differ between a checkpoint and a run it starts: the slot heads (read by training only),
# how far gradients flow and what a forward returns; the other weights mean the same under any of them.
TRAINING_ONLY = ("slot_classes", "bptt_depth", "keep")


def _weight_shaping(settings: dict) -> dict:
    """`settings` (an rmt or backbone config) without what shapes no weight: TRAINING_ONLY and dropout
    probabilities."""
    return {k: v for k, v in settings.items() if k not in TRAINING_ONLY and not is_dropout_key(k)}


def load_checkpoint(folder: Path, model: RecurrentWrapper, optimizer: torch.optim.Optimizer) -> dict:
    """Load weights, optimizer and RNG state from `folder` into this run's objects; returns loop state."""
    load_weights(folder, model)
    try:
        tensors = load_file(str(folder / "optimizer.safetensors"))
        meta = json.loads((folder / "state.json").read_text())
        restore_optimizer(optimizer, {k: v for k, v in tensors.items() if not k.startswith("rng.")}, meta["optimizer"])
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {folder} has a corrupt optimizer state: {err!r}") from err
    set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")})
    return meta["loop"]


def first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
    return f"{path or 'value'}: this run has {a!r}, the checkpoint has {b!r}"
