"""Trace storage: a folder of safetensors shards and parquet tables with one JSON index, read lazily.

    trace/
      trace.json            index: model fingerprint, config, layout, every tensor's file/shape, labels
      summaries.parquet     per-segment summaries (tidy), streamed to disk in row groups
      written.parquet       top-k tokens written per memory slot
      maps/seg-00003.layer-001.safetensors   full attention map of one selected segment and layer
      memory/part-00000.safetensors   memory states, several segments per shard

Never pickle: tensors go through safetensors, tables through parquet, the index through JSON.
Everything held in RAM counts against the budget (TraceConfig.budget_mib); with a folder, maps
and memory states spill to disk as they are made, without one the writer refuses past the budget.
`trace.json` is written last, so an interrupted recording is recognisable as incomplete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

import rmt_lab
from rmt_lab.io import atomic_path, write_json
from rmt_lab.trace.config import MIB
from rmt_lab.trace.names import hook_name, parse_name

INDEX_FILE = "trace.json"
SUMMARIES_FILE = "summaries.parquet"
WRITTEN_FILE = "written.parquet"
FORMAT_VERSION = 1
MEMORY_SHARD_BYTES = 16 * MIB  # memory states are small: batch them into shards of about this size


class TraceBudgetError(MemoryError):
    """The selection would hold more trace data in RAM than the budget allows."""


class TraceMismatchError(ValueError):
    """A trace folder was recorded with another model than the one it is used with."""


# model -> (identity of its weights, digest): hashing MiniLM's 90 MB takes a while, and every recording needs it.
_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_digest(model) -> str:
    """sha256 over the state dict; cached while no tensor is replaced or modified in place (`_version`)."""
    tensors = [*model.parameters(), *model.buffers()]
    identity = tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in tensors)
    cached = _DIGESTS.get(model)
    if cached is not None and cached[0] == identity:
        return cached[1]
    state = sorted(model.state_dict().items())
    digest = hashlib.sha256()
    for name, tensor in state:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    _DIGESTS[model] = (identity, digest.hexdigest())
    return digest.hexdigest()


def model_fingerprint(model) -> dict:
    """What identifies the model a trace belongs to: architecture, memory layout and a digest of the weights."""
    cell = model.cell
    hf = cell.model.config
    return {
        "backbone": cell.backbone_name,
        "model_type": hf.model_type,
        "layout": cell.layout,
        "n_layers": int(hf.num_hidden_layers),
        "n_heads": int(hf.num_attention_heads),
        "d_model": int(cell.d_model),
        "num_mem_tokens": int(cell.config.num_mem_tokens),
        "segment_size": int(cell.config.segment_size),
        "weights_sha256": weights_digest(model),
    }


def check_fingerprint(recorded: dict, model, where: str) -> None:
    current = model_fingerprint(model)
    diffs = [k for k in current if recorded.get(k) != current[k]]
    if not diffs:
        return
    if diffs == ["weights_sha256"]:
        raise TraceMismatchError(
            f"{where} was recorded with other weights of the same architecture ({recorded['backbone']!r}): weights "
            f"sha256 {recorded['weights_sha256'][:12]}... there, {current['weights_sha256'][:12]}... for this model"
        )
    detail = ", ".join(f"{k} {recorded.get(k)!r} there vs {current[k]!r} here" for k in diffs if k != "weights_sha256")
    raise TraceMismatchError(f"{where} was recorded with another model: {detail}")


class TraceWriter:
    """Collects tensors and tables of one recording, in RAM within the budget or spilled to `root`."""

    def __init__(self, root: Path | None, budget_bytes: int, index: dict):
        self.root = root
        self.budget = budget_bytes
        self.index = index
        self.index.setdefault("tensors", {})
        self.tensors: dict[str, Tensor] = {}  # in RAM (no folder), or memory states waiting for their shard
        self.pending_memory: list[str] = []
        self.pending_bytes = 0
        self.held = 0  # bytes of trace data in RAM now
        self.peak_held = 0
        self.tables: dict[str, list[pd.DataFrame]] = {SUMMARIES_FILE: [], WRITTEN_FILE: []}
        self._sinks: dict[str, tuple[Path, pq.ParquetWriter]] = {}
        self._tmp: list[Path] = []
        self._shards = 0

    # --------------------------------------------------------------- accounting
    def hold(self, nbytes: int, what: str) -> None:
        """Count `nbytes` of trace data the caller keeps in RAM (refused past the budget)."""
        self._hold(nbytes, what)

    def release(self, nbytes: int) -> None:
        self.held -= nbytes

    def _hold(self, nbytes: int, what: str) -> None:
        if self.held + nbytes > self.budget:
            raise TraceBudgetError(
                f"{what} needs {nbytes / MIB:.1f} MiB on top of {self.held / MIB:.1f} MiB already held, over the "
                f"trace budget of {self.budget / MIB:.1f} MiB (TraceConfig.budget_mib); give the recorder a folder "
                "(out=...) to spill to disk, select fewer segments, layers or heads, or raise budget_mib"
            )
        self.held += nbytes
        self.peak_held = max(self.peak_held, self.held)

    # --------------------------------------------------------------- tensors
    def add_map(self, segment: int, layer: int, tensor: Tensor) -> None:
        """One layer's full map; with a folder it goes straight to its own file, so RAM holds one layer's."""
        name = hook_name(segment, layer)
        nbytes = tensor.numel() * tensor.element_size()
        self._hold(nbytes, f"the full map of segment {segment}, layer {layer}")
        rel = None
        if self.root is not None:
            rel = f"maps/seg-{segment:05d}.layer-{layer:03d}.safetensors"
            self._save(rel, {name: tensor})
            self.held -= nbytes
        else:
            self.tensors[name] = tensor
        self.index["tensors"][name] = {"file": rel, "shape": list(tensor.shape),
                                       "dtype": str(tensor.dtype).removeprefix("torch.")}

    def add_segment(self, segment: int, meta: dict) -> None:
        """What a segment with full maps needs to read them: kept layers and heads, lengths, labels."""
        self.index.setdefault("segments", {})[str(segment)] = meta

    def add_memory(self, segment: int, state: Tensor) -> None:
        name = hook_name(segment, kind="memory.state")
        nbytes = state.numel() * state.element_size()
        self._hold(nbytes, f"the memory state of segment {segment}")
        self.tensors[name] = state
        self.pending_memory.append(name)
        self.pending_bytes += nbytes
        self.index["tensors"][name] = {"file": None, "shape": list(state.shape),
                                       "dtype": str(state.dtype).removeprefix("torch.")}
        if self.root is not None and self.pending_bytes >= min(MEMORY_SHARD_BYTES, self.budget // 4):
            self.flush_memory()

    def flush_memory(self) -> None:
        if self.root is None or not self.pending_memory:
            return
        rel = f"memory/part-{self._shards:05d}.safetensors"
        self._shards += 1
        shard = {n: self.tensors.pop(n) for n in self.pending_memory}
        self._save(rel, shard)
        for n, t in shard.items():
            self.index["tensors"][n]["file"] = rel
        self.held -= self.pending_bytes
        self.pending_memory, self.pending_bytes = [], 0

    def _save(self, rel: str, tensors: dict[str, Tensor]) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))

    # --------------------------------------------------------------- tables
    def add_table(self, file: str, frame: pd.DataFrame) -> None:
        """Append rows; with a folder they stream into the parquet file as one row group."""
        if frame.empty:
            return
        if self.root is None:
            self._hold(int(frame.memory_usage(index=False).sum()), f"{len(frame):,} rows of {file}")
            self.tables[file].append(frame)
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if file not in self._sinks:
            tmp = self.root / f".{file}.partial"
            self._tmp.append(tmp)
            self._sinks[file] = (tmp, pq.ParquetWriter(tmp, table.schema))
        self._sinks[file][1].write_table(table)

    # --------------------------------------------------------------- end
    def finish(self, empty_tables: dict[str, Callable[[], pd.DataFrame]]) -> Trace:
        """Close the files and write the index; returns the trace (lazy when on disk). `empty_tables` make
        the tables that received no rows."""
        self.flush_memory()
        if self.root is None:
            tables = {}
            for file, parts in self.tables.items():
                if not parts:
                    tables[file] = empty_tables[file]()
                else:
                    tables[file] = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
            return Trace(self.index, tensors=self.tensors, tables=tables)
        for file, empty in empty_tables.items():
            if file in self._sinks:
                tmp, writer = self._sinks.pop(file)
                writer.close()
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.root / file)
            else:
                from rmt_lab.io import write_parquet

                write_parquet(self.root / file, empty())
        write_json(self.root / INDEX_FILE, self.index)
        return Trace.load(self.root)

    def abort(self) -> None:
        for _, writer in self._sinks.values():
            writer.close()
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)


class Trace:
    """A recorded trace: summaries as DataFrames, full maps and memory states by stable name, loaded lazily."""

    def __init__(self, index: dict, root: Path | None = None, tensors: dict[str, Tensor] | None = None,
                 tables: dict[str, pd.DataFrame] | None = None):
        self.index = index
        self.root = root
        self._tensors = tensors if tensors is not None else {}
        self._tables = dict(tables or {})

    # --------------------------------------------------------------- loading
    @classmethod
    def load(cls, folder: str | os.PathLike, model=None) -> Trace:
        """Open a trace folder (nothing big is read yet). With `model`, refuse a trace of another model."""
        root = Path(folder)
        path = root / INDEX_FILE
        if not path.is_file():
            hint = " (an interrupted recording leaves no index)" if root.is_dir() and any(root.iterdir()) else ""
            raise FileNotFoundError(f"{path} is missing: {root} is not a finished trace folder{hint}")
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            version = index["format_version"]
            index["model"], index["tensors"]  # noqa: B018 (presence check)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is corrupt or not a trace index: {err!r}") from err
        if version != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {version}; this rmt_lab reads {FORMAT_VERSION}")
        trace = cls(index, root=root)
        if model is not None:
            trace.check_model(model)
        return trace

    def check_model(self, model) -> None:
        """Raise TraceMismatchError unless `model` is the model this trace was recorded with."""
        check_fingerprint(self.index["model"], model, str(self.root) if self.root else "this trace")

    def save(self, folder: str | os.PathLike) -> Trace:
        """Write an in-RAM trace to a folder (a folder-backed trace is copied); returns the saved trace."""
        root = Path(folder)
        if (root / INDEX_FILE).exists():
            raise FileExistsError(f"{root} already holds a trace; choose another folder")
        root.mkdir(parents=True, exist_ok=True)
        if self.root is not None:
            shutil.copytree(self.root, root, dirs_exist_ok=True)
            return Trace.load(root)
        index = json.loads(json.dumps(self.index))
        by_file: dict[str, dict[str, Tensor]] = {}
        for name in self.names():
            seg, layer, kind = parse_name(name)
            if kind == "attn.pattern":
                rel = f"maps/seg-{seg:05d}.layer-{layer:03d}.safetensors"
            else:
                rel = "memory/part-00000.safetensors"
            by_file.setdefault(rel, {})[name] = self[name]
            index["tensors"][name]["file"] = rel
        writer = TraceWriter(root, 1 << 62, index)
        for rel, tensors in by_file.items():
            writer._save(rel, tensors)
        from rmt_lab.io import write_parquet

        write_parquet(root / SUMMARIES_FILE, self.summaries)
        write_parquet(root / WRITTEN_FILE, self.written)
        write_json(root / INDEX_FILE, index)
        return Trace.load(root)

    # --------------------------------------------------------------- contents
    @property
    def config(self) -> dict:
        return self.index["config"]

    @property
    def n_segments(self) -> int:
        return int(self.index["n_segments"])

    @property
    def batch(self) -> int:
        return int(self.index["batch"])

    def _table(self, file: str) -> pd.DataFrame:
        if file not in self._tables:
            self._tables[file] = pd.read_parquet(self.root / file)
        return self._tables[file]

    @property
    def summaries(self) -> pd.DataFrame:
        """Tidy per-segment summaries (see rmt_lab.trace.summaries)."""
        return self._table(SUMMARIES_FILE)

    @property
    def written(self) -> pd.DataFrame:
        """Top-k tokens written per memory slot, per segment and layer."""
        return self._table(WRITTEN_FILE)

    def names(self) -> list[str]:
        def order(name):
            segment, layer, kind = parse_name(name)
            return segment, kind, -1 if layer is None else layer

        return sorted(self.index["tensors"], key=order)

    def __contains__(self, name: str) -> bool:
        return name in self.index["tensors"]

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.index["tensors"]:
            kept = sorted({parse_name(n)[0] for n in self.index["tensors"] if parse_name(n)[2] == "attn.pattern"})
            raise KeyError(f"{name!r} is not in this trace; full maps were kept for segments {kept}")
        if name in self._tensors:
            return self._tensors[name]
        with safe_open(str(self.root / self.index["tensors"][name]["file"]), framework="pt") as f:
            return f.get_tensor(name)

    @property
    def map_segments(self) -> list[int]:
        """Segments whose full maps were kept."""
        return sorted(int(s) for s in self.index.get("segments", {}))

    def segment_info(self, segment: int) -> dict:
        info = self.index.get("segments", {}).get(str(segment))
        if info is None:
            raise KeyError(f"segment {segment} kept no full maps; kept segments: {self.map_segments}")
        return info

    def pattern(self, segment: int, layer: int) -> Tensor:
        """Full attention map (batch, kept heads, L, L) of one layer; heads are `segment_info(s)['heads']`."""
        info = self.segment_info(segment)
        if layer not in info["layers"]:
            raise KeyError(f"layer {layer} kept no map in segment {segment}; kept layers: {info['layers']}")
        return self[hook_name(segment, layer)]

    def labels(self, segment: int, sample: int = 0) -> list[str]:
        """Position labels of one sample's map: [CLS], [mem i], [SEP], tokens, [PAD] (decoder: [read i], [write i])."""
        info = self.segment_info(segment)
        if not 0 <= sample < len(info["labels"]):
            raise IndexError(f"sample {sample} is out of range: the trace has {len(info['labels'])} samples")
        return info["labels"][sample]

    def memory_states(self) -> Tensor:
        """Memory after every segment (n_segments, batch, M, d); needs TraceConfig.keep_memory."""
        names = [hook_name(s, kind="memory.state") for s in range(self.n_segments)]
        missing = [n for n in names if n not in self]
        if missing:
            raise KeyError(f"this trace kept no memory states ({missing[0]!r} is missing): record with "
                           "keep_memory=True")
        return torch.stack([self[n] for n in names])

    def __repr__(self) -> str:
        where = str(self.root) if self.root else "in memory"
        return (f"Trace({where}: {self.n_segments} segments x batch {self.batch}, model "
                f"{self.index['model']['backbone']!r}, maps for segments {self.map_segments})")
