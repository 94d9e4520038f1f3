"""The recorder: a context manager that traces an RMT's memory while it runs, segment by segment.

    with Recorder(model, TraceConfig(segments="facts,last"), out="runs/trace", facts=samples) as rec:
        model.stream(segments)
    rec.trace.summaries        # tidy DataFrame, every segment
    rec.trace.pattern(3, 0)    # (batch, heads, L, L) full map of segment 3, layer 0 (read lazily)

It hooks from outside the model: a forward pre-hook and a forward hook on `model.cell` (one call
per segment, in order) and, for the duration only, the backbone's attention implementation set to
"rmt_trace" (see rmt_lab/trace/attention.py); a backbone that computes attention in its own code (and
so runs eager attention) is instead asked for its maps. Both are undone in `finally`, whatever happens. The
cell calls inside one `with` block form one recording: segment indices count up across them.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from transformers.integrations.sdpa_attention import repeat_kv

import rmt_lab
from rmt_lab.config import to_dict
from rmt_lab.model.backbones import attention_implementation
from rmt_lab.trace import attention
from rmt_lab.trace.attention import (
    TRACE_IMPL, FloatMask, full_probs, attention_with_read_mass, lse_path_ok, mean_over_content, read_mass, read_scores,
    row_metrics, row_probs, row_scores, summaries_from_maps,
)
from rmt_lab.trace.config import MIB, TraceConfig
from rmt_lab.trace.index import IndexCache, position_labels
from rmt_lab.trace.names import hook_matches, hook_name, hook_pattern
from rmt_lab.trace.store import (
    FORMAT_VERSION, INDEX_FILE, SUMMARIES_FILE, WRITTEN_FILE, Trace, TraceBudgetError, TraceWriter, model_fingerprint,
)
from rmt_lab.trace.summaries import empty_summaries, memory_dynamics, summary_frame, written_frame

CHUNK_SEGMENTS = 256  # summaries are turned into table rows (and streamed to disk) this many segments at a time
GROUP_BYTES = 8 * MIB  # scratch for the answer/writer rows of consecutive segments, summarized together
MAX_GROUP = 32  # most segments summarized together (small models: a few tensor ops per group, not per segment)


@contextlib.contextmanager
def own_threads(n: int | None):
    """Run the recorder's own small tensor ops on `n` threads (None: leave the setting alone). On a busy
    machine each parallel region waits for a preempted thread: a softmax over the summary rows took
    0.3 ms on one thread and 1.7 ms on two with other jobs running; idle, two threads are ~1.5x faster.
    The model's own ops keep their threads: the setting is restored before the model continues."""
    threads = torch.get_num_threads()
    if n is None or n == threads:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fact_positions(samples: Sequence) -> list[list[int]]:
    """Content positions of every fact token of each sample (objects with `.facts` Spans, e.g. task Samples)."""
    return [[p for span in s.facts for p in span.positions] for s in samples]


class Recorder:
    """Records memory read/write/retain summaries for every segment and full maps for selected ones.

    model: a RecurrentWrapper. out: trace folder (maps and memory states spill there; None keeps the
    trace in RAM within the budget). facts: per batch row, the content positions of fact tokens (or
    task Samples), enabling fact alignment and the "facts" segment selection. n_segments: the stream's
    length, needed only for the "last" selection. Map labels name tokens with the model's own tokenizer
    (`RecurrentWrapper.tokenizer`); a model without one is labelled by token id ("id:123").

    hooks: {pattern: fn} called as fn(tensor, name) with each recorded tensor as it is made, named by
    `hook_name` (TransformerLens-style): the pattern is a kind ("attn.pattern", "memory.state") or a glob
    over names ("seg.*.layer.0.attn.pattern"). "attn.pattern" hooks see the maps the config keeps
    (`TraceConfig.segments`, `layers`, `heads`), on the CPU; "memory.state" hooks see every segment's written
    memory, also when the trace keeps none. Hooks observe and must not change the tensors: the trace holds
    the same ones.
    """

    def __init__(self, model, config: TraceConfig | None = None, out: str | Path | None = None,
                 facts: Sequence | None = None, n_segments: int | None = None, overwrite: bool = False,
                 fused: str = "auto", hooks: Mapping[str, Callable[[Tensor, str], None]] | None = None):
        self.model = model
        if hooks is not None and not isinstance(hooks, Mapping):
            raise TypeError(f"Recorder hooks must map a kind or name glob to a function, got {type(hooks).__name__}")
        self.hooks = [(hook_pattern(pattern), fn) for pattern, fn in (hooks or {}).items()]
        for pattern, fn in self.hooks:
            if not callable(fn):
                raise TypeError(f"Recorder hook for {pattern!r} must be callable (tensor, name), got {type(fn).__name__}")
        if config is not None and not isinstance(config, TraceConfig):
            raise TypeError(f"Recorder config must be a TraceConfig, got {type(config).__name__}; build one with "
                            "TraceConfig(...) or TraceConfig.from_dict(...)")
        if n_segments is not None and (isinstance(n_segments, bool) or not isinstance(n_segments, int)
                                       or n_segments < 1):
            raise ValueError(f"Recorder n_segments={n_segments!r} must be an integer >= 1 (the stream's length) or "
                             "None")
        self.config = config if config is not None else TraceConfig()
        self.out = Path(out) if out is not None else None
        self.overwrite = overwrite
        self.n_segments = n_segments
        if fused not in ("auto", "lse", "channel"):
            raise ValueError(f"fused={fused!r} is not allowed; allowed values: ['auto', 'lse', 'channel']")
        self.fused = fused  # how the read mass leaves the fused kernel: lse (CPU), an extra channel, auto
        if facts is not None and len(facts) and hasattr(facts[0], "facts"):
            facts = fact_positions(facts)
        self.facts = facts
        self.trace: Trace | None = None
        self.seconds = 0.0
        self._handles: list = []
        self._restore = contextlib.ExitStack()  # sets the backbone's own attention back
        self._token = None  # from RECORDING.set while a cell call runs
        self.index = None  # the current segment's SegmentIndex, while a cell call runs

    # ------------------------------------------------------------------ setup
    def _check(self) -> None:
        model, c = self.model, self.config
        if not hasattr(model, "cell") or not hasattr(model.cell, "layout"):
            raise TypeError(f"Recorder needs an rmt_lab RecurrentWrapper, got {type(model).__name__}")
        cell = model.cell
        hf = cell.model.config
        self.n_layers, self.n_heads = int(hf.num_hidden_layers), int(hf.num_attention_heads)
        self.n_mem = int(cell.config.num_mem_tokens)
        if self.n_mem < 1:
            raise ValueError("the model has no memory tokens (RMTConfig.num_mem_tokens=0): there is no memory to trace")
        for name, n in (("layers", self.n_layers), ("heads", self.n_heads)):
            chosen = getattr(c, name)
            bad = [i for i in (chosen or ()) if not 0 <= i < n]
            if bad:
                raise ValueError(
                    f"TraceConfig.{name}={list(chosen)}: {name[:-1]} {bad} does not exist; backbone "
                    f"{cell.backbone_name!r} has {n} {name} (0..{n - 1})"
                )
        self.map_layers = tuple(c.layers) if c.layers is not None else tuple(range(self.n_layers))
        self.map_heads = list(c.heads) if c.heads is not None else list(range(self.n_heads))
        self.selection = c.selection
        if self.selection.last and self.n_segments is None:
            raise ValueError("TraceConfig.segments includes 'last', which needs Recorder(n_segments=...): "
                             "a stream does not say where it ends")
        if self.selection.facts and self.facts is None:
            raise ValueError("TraceConfig.segments includes 'facts', which needs Recorder(facts=...)")
        if getattr(model, "checkpoint_segments", False) and torch.is_grad_enabled():
            raise ValueError("recording with checkpoint_segments and gradients would count every recomputed segment "
                             "twice; record under torch.no_grad() or turn checkpoint_segments off")
        if any(isinstance(getattr(h, "__self__", None), Recorder) for h in cell._forward_pre_hooks.values()):
            raise RuntimeError("this model is already being recorded by another Recorder")
        # Layers are told apart by the order of their attention calls within a segment (each layer attends
        # once per cell call), which serves families whose attention modules carry no layer index or are
        # shared between layers (DistilBERT, ALBERT). Families that compute attention in their own code
        # rather than through transformers' AttentionInterface (HF marks them: ALiBi models such as BLOOM,
        # MPT and Falcon; DeBERTa's disentangled attention) cannot be given the recording function; the
        # recorder reads their maps from the model itself (`output_attentions=True`, eager attention), and
        # computes the same summaries from them, at the cost of every full map.
        self.body = cell.adapter.body(cell.model)
        self.own_attention = not getattr(self.body, "_supports_attention_backend", False)
        impl = hf._attn_implementation
        if self.own_attention and impl != "eager":
            # Switching such a family to eager for the recording could move its outputs (sdpa and eager
            # Falcon disagree on padded segments), so the model must already run what is recorded.
            raise ValueError(
                f"backbone {cell.backbone_name!r} ({hf.model_type}) computes attention in its own code, so the recorder "
                f"reads the maps it returns, which only eager attention computes; it runs {impl!r}, which HF cannot "
                "switch after loading for this family: load it with attn_implementation='eager' (from_pretrained or "
                "_from_config) to record it"
            )
        if self.out is not None and (self.out / INDEX_FILE).exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.out} already holds a trace; pass overwrite=True or another folder")
            for part in ("maps", "memory"):
                shutil.rmtree(self.out / part, ignore_errors=True)
            for part in (INDEX_FILE, SUMMARIES_FILE, WRITTEN_FILE):
                (self.out / part).unlink(missing_ok=True)

    def __enter__(self) -> Recorder:
        self._check()
        cell = self.model.cell
        c = self.config
        index = {
            "format_version": FORMAT_VERSION,
            "rmt_lab_version": rmt_lab.__version__,
            "model": model_fingerprint(self.model),
            "config": to_dict(c),
            "layout": cell.layout,
            "num_mem_tokens": self.n_mem,
            "prefix_len": int(cell.prefix_len),
            "segment_size": int(cell.config.segment_size),
            "facts": [list(map(int, f)) for f in self.facts] if self.facts is not None else None,
            "tensors": {},
            "segments": {},
        }
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.writer = TraceWriter(self.out, c.budget_bytes, index)
        self.segment = 0
        self.batch = None
        self.starts = None
        self._buffer: list[dict] = []
        self._scratch, self._scratch_key = None, None
        self._pending: list[dict] = []
        self._row_bytes = 0
        self._bias_for, self._bias = None, None
        self._total_checked = False
        # Summaries wait in RAM this many segments (their memory states included) before becoming table rows.
        self._chunk = CHUNK_SEGMENTS
        self._float_mask = FloatMask()
        self._map_dtype = getattr(torch, c.map_dtype)
        self._started = time.perf_counter()
        try:
            self._handles.append(cell.register_forward_pre_hook(self._before, with_kwargs=True))
            self._handles.append(cell.register_forward_hook(self._after, with_kwargs=True))
            if self.own_attention:
                self._handles.append(self.body.register_forward_pre_hook(self._ask_for_maps, with_kwargs=True))
                self._handles.append(self.body.register_forward_hook(self._own_maps))
            else:
                self._restore.enter_context(attention_implementation(cell.model, TRACE_IMPL))
        except BaseException:
            self._detach()
            raise
        return self

    def _detach(self) -> None:
        """Undo every change to the model; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._token is not None:
            attention.RECORDING.reset(self._token)
            self._token = None
        self._restore.close()
        self.index = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._detach()
        finally:
            if exc_type is None:
                self._flush_tables()
                self.writer.index["n_segments"] = self.segment
                self.writer.index["batch"] = self.batch or 0
                self.writer.index["peak_held_mib"] = self.writer.peak_held / MIB
                self.trace = self.writer.finish({SUMMARIES_FILE: empty_summaries, WRITTEN_FILE: _empty_written})
            else:
                self.writer.abort()
            self.seconds = time.perf_counter() - self._started
        return False

    @property
    def peak_held_mib(self) -> float:
        """Most trace data held in RAM at once during the recording."""
        return self.writer.peak_held / MIB

    # ------------------------------------------------------------------ per segment
    def _before(self, cell, args, kwargs):
        input_ids, attention_mask, memory = _cell_args(args, kwargs)
        if attention_mask is None:  # every token valid (a full segment)
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        batch = input_ids.shape[0]
        if self.batch is None:
            self._first_segment(cell, batch, input_ids.device)
        elif batch != self.batch:
            raise ValueError(f"segment {self.segment} has batch {batch}; this recording started with {self.batch}")
        self.index = self._indices.get(attention_mask, self.starts)
        if self._pending and self._pending[0]["ix"] is not self.index:
            self._summarize_pending()  # a group shares one index (and so one scratch shape)
        want = self.selection.wants(self.segment, self.n_segments, self.index.any_fact)
        self.capture_layers = self.map_layers if want else ()
        if want:
            self._check_map_budget(self.index.n_positions)
        self._ids = input_ids
        self._memory_in = memory
        self._token = attention.RECORDING.set(self)  # this call's attention is recorded
        self._seen = [False] * self.n_layers
        self._calls = 0  # attention calls in this segment so far: the next call's layer
        self._kept_maps = False

    def _first_segment(self, cell, batch: int, device: torch.device) -> None:
        self.batch = batch
        self.starts = [0] * batch
        if self.facts is not None and len(self.facts) != batch:
            raise ValueError(f"facts were given for {len(self.facts)} samples but the input has batch {batch}")
        self._indices = IndexCache(cell, self.facts, device)
        self._use_lse = {"auto": None, "lse": True, "channel": False}[self.fused]
        # What one buffered segment keeps until its table rows are made: stats, top-k, memory in/out, token ids.
        c, d = self.config, cell.d_model
        self._row_bytes = batch * (self.n_layers * (self.n_heads * 7 * 4 + self.n_mem * c.top_k * 16)
                                   + 2 * self.n_mem * d * 4 + cell.config.segment_size * 8)
        self._chunk = int(max(1, min(CHUNK_SEGMENTS, c.budget_bytes // 8 // self._row_bytes)))

    def _check_map_budget(self, n_positions: int) -> None:
        """Refuse, before computing them, maps that cannot fit: one segment's over the budget, or (in RAM,
        when the selection's size is known) all of them."""
        itemsize = torch.finfo(self._map_dtype).bits // 8
        per_layer = self.batch * len(self.map_heads) * n_positions**2 * itemsize
        per = per_layer * len(self.map_layers)
        how = (f"batch {self.batch} x {len(self.map_heads)} heads x {n_positions}^2 positions x "
               f"{len(self.map_layers)} layers x {itemsize} bytes")
        budget = self.config.budget_mib
        if self.out is not None and per_layer > self.config.budget_bytes:  # spilled layer by layer
            raise TraceBudgetError(
                f"the full map of one selected layer needs {per_layer / MIB:.1f} MiB (batch {self.batch} x "
                f"{len(self.map_heads)} heads x {n_positions}^2 positions x {itemsize} bytes), over the trace budget "
                f"of {budget:.1f} MiB (TraceConfig.budget_mib); select fewer heads or raise budget_mib"
            )
        if self.out is None and per > self.config.budget_bytes:
            raise TraceBudgetError(
                f"the full maps of one selected segment need {per / MIB:.1f} MiB ({how}), over the trace budget of "
                f"{budget:.1f} MiB (TraceConfig.budget_mib); give the recorder a folder (out=...) to spill them layer "
                "by layer, select fewer layers or heads, or raise budget_mib"
            )
        if self.out is None and not self._total_checked:
            self._total_checked = True
            count = self.selection.count(self.n_segments)
            if count is not None and count * per > self.config.budget_bytes:
                raise TraceBudgetError(
                    f"the selection keeps full maps of {count} segments, {count * per / MIB:.1f} MiB in all "
                    f"({per / MIB:.1f} MiB each: {how}), over the trace budget of {budget:.1f} MiB; give the recorder "
                    "a folder (out=...) to spill maps to disk, select fewer segments, layers or heads, or raise "
                    "budget_mib"
                )

    def attend(self, module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs):
        """Called by the registered attention function for every layer of a recorded segment."""
        ix, c = self.index, self.config
        layer, self._calls = self._calls, self._calls + 1
        if layer >= self.n_layers:
            raise RuntimeError(f"segment {self.segment}: attention was called more than once per layer "
                               f"({self.n_layers} layers): the recorder cannot tell the layers apart")
        window = kwargs.get("sliding_window")
        if window is not None and window < ix.n_positions:
            # The summaries' row masks (index.py) let a query see every earlier valid position.
            raise ValueError(
                f"layer {layer} of backbone {self.model.cell.backbone_name!r} attends within a sliding window of "
                f"{window} positions, fewer than the {ix.n_positions} of a segment: the recorder's summaries assume "
                f"every earlier position is visible; record with segments of at most {window} positions"
            )
        # Grouped-query / multi-query attention: the summaries need a key per query head (sdpa repeats them too).
        key_heads = repeat_kv(key, query.shape[1] // key.shape[1])  # (batch, heads, L, d)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        self._scale = scale
        capture = layer in self.capture_layers
        if not c.summaries:  # full maps only: the model's own sdpa call, maps computed beside it
            out, _ = attention.sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                                      scaling=scaling, is_causal=is_causal, **kwargs)
            if capture:
                self._capture(module, query, key_heads, attention_mask, scale, is_causal, layer)
            return out, None
        if self._use_lse is None:  # "auto": decided once, on the first layer of the recording
            self._use_lse = lse_path_ok(query, key, value, kwargs)
        use_lse = self._use_lse
        rows, reads, lses = self._buffers(query, ix)
        out, read, lse = self._fused(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs,
                                     use_lse)
        with torch.no_grad(), own_threads(c.own_threads):
            q, k = query.detach(), key_heads.detach()
            row_scores(q, k, ix, out=rows[layer])
            if lse is None:
                reads[layer, :, :, 0] = read  # the mass itself (extra-channel path)
            else:
                read_scores(q, k, ix.content_rows, ix.read_keys, out=reads[layer])
                lses[layer] = lse
            self._seen[layer] = True
        if capture:
            self._capture(module, query, key_heads, attention_mask, scale, is_causal, layer)
        return out, None

    def _fused(self, module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, use_lse):
        """The model's own attention call (what plain sdpa would do), plus the lse or read mass."""
        ix = self.index
        return attention_with_read_mass(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs,
                               ix.read_keys, ix.content_rows, self._float_mask, use_lse)

    def _capture(self, module, query, key, attention_mask, scale, is_causal, layer) -> None:
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        with torch.no_grad():
            maps = full_probs(query.detach(), key.detach(), attention_mask, scale, bool(causal))
        self._keep_map(maps, layer)

    def _ask_for_maps(self, body, args, kwargs):
        """Forward pre-hook on a backbone that computes attention in its own code: ask it for its maps."""
        if attention.RECORDING.get() is self:
            return args, {**kwargs, "output_attentions": True}
        return None

    def _own_maps(self, body, args, output) -> None:
        """Forward hook on such a backbone: the summaries (and kept maps) from the maps it returned."""
        if attention.RECORDING.get() is not self:
            return
        maps = output.attentions
        if maps is None or len(maps) != self.n_layers:
            raise RuntimeError(f"backbone {self.model.cell.backbone_name!r} returned "
                               f"{'no' if maps is None else len(maps)} attention maps for its {self.n_layers} layers "
                               "with output_attentions=True: the recorder cannot see its attention")
        with torch.no_grad(), own_threads(self.config.own_threads):
            if self.config.summaries:
                per_layer = [summaries_from_maps(m.detach(), self.index, self.config.top_k) for m in maps]
                self._own_stats = [None if part[0] is None else torch.stack(part) for part in zip(*per_layer)]
            for layer in self.capture_layers:
                self._keep_map(maps[layer].detach(), layer)
        self._seen = [True] * self.n_layers

    def _keep_map(self, maps: Tensor, layer: int) -> None:
        kept = maps[:, self.map_heads].to(self._map_dtype).cpu()
        self.writer.add_map(self.segment, layer, kept)
        name = hook_name(self.segment, layer)
        for fn in self._hooks_for(name):
            fn(kept, name)
        self._kept_maps = True

    def _hooks_for(self, name: str) -> list[Callable[[Tensor, str], None]]:
        return [fn for pattern, fn in self.hooks if hook_matches(pattern, name)]

    def _buffers(self, query: Tensor, ix) -> tuple[Tensor, Tensor, Tensor]:
        """This segment's slot of the group scratch, each layer writing its part in place: answer/writer row
        scores (layers, batch, heads, 1 + M, L), memory keys' scores with the content-row queries
        (layers, batch, heads, M, seg_len) and those queries' log-sum-exp (layers, batch, heads, seg_len)."""
        key = (query.shape, ix.content_rows, query.dtype)
        if key != self._scratch_key:
            assert not self._pending, "a group shares one scratch shape"
            b, h, n, _ = query.shape
            n_read = ix.content_rows.stop - ix.content_rows.start
            per_segment = self.n_layers * b * h * ((self.n_mem + 1) * n + (self.n_mem + 1) * n_read) * 4
            # Working memory like the model's activations, not trace data: sized within the budget, not held.
            group = int(max(1, min(MAX_GROUP, min(GROUP_BYTES, self.config.budget_bytes // 8) // per_segment)))
            opts = {"dtype": query.dtype, "device": query.device}
            self._scratch = (
                torch.empty(group, self.n_layers, b, h, self.n_mem + 1, n, **opts),
                torch.empty(group, self.n_layers, b, h, self.n_mem, n_read, **opts),
                torch.empty(group, self.n_layers, b, h, n_read, dtype=torch.float32, device=query.device),
            )
            self._scratch_key = key
        slot = len(self._pending)
        return tuple(t[slot] for t in self._scratch)

    def _row_bias(self, ix, heads: int) -> Tensor | None:
        """The index's row bias expanded over heads, built once per index (see attention.row_probs)."""
        if ix.all_visible:
            return None
        if self._bias_for is not ix:
            self._bias_for = ix
            self._bias = ix.row_bias.expand(-1, heads, -1, -1).contiguous()
        return self._bias

    def _after(self, cell, args, kwargs, output):
        attention.RECORDING.reset(self._token)
        self._token = None
        ix, c, seg = self.index, self.config, self.segment
        missing = [i for i, seen in enumerate(self._seen) if not seen]
        if c.summaries and missing:
            raise RuntimeError(f"segment {seg}: layers {missing} never called the recorded attention function")
        with torch.no_grad():
            if c.summaries:
                self.writer.hold(self._row_bytes, f"the summaries of segment {seg}")
                # References only: the group's summary math and the table rows come later, in bulk.
                row = {"segment": seg, "ix": ix, "starts": self.starts, "ids": self._ids,
                       "memory_in": self._memory_in.detach(), "memory_out": output.memory.detach()}
                if self.own_attention:
                    stats, values, pos = self._own_stats
                    self._buffer.append(dict(row, stats=stats, top_values=values, top_pos=pos))
                else:
                    self._pending.append(row)
                    if len(self._pending) == self._scratch[0].shape[0]:
                        self._summarize_pending()
            name = hook_name(seg, kind="memory.state")
            watchers = self._hooks_for(name)
            if c.keep_memory or watchers:
                state = output.memory.detach().float().cpu().clone()
                if c.keep_memory:
                    self.writer.add_memory(seg, state)
                for fn in watchers:
                    fn(state, name)
            if self._kept_maps:
                self.writer.add_segment(seg, self._map_meta())
        self.starts = [s + n for s, n in zip(self.starts, ix.lengths_list)]
        self.segment += 1
        self.index = None
        self._kept_maps = False
        if len(self._buffer) + len(self._pending) >= self._chunk:
            self._flush_tables()

    def _summarize_pending(self) -> None:
        """The summary math of the pending segments, all layers and segments at once: the answer/writer
        rows' softmax, the read mass, stats and top-k written tokens. Their rows join the table buffer."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        n, ix = len(pending), pending[0]["ix"]
        rows, reads, lses = (t[:n] for t in self._scratch)
        with torch.no_grad(), own_threads(self.config.own_threads):
            probs = row_probs(rows, self._scale, ix, self._row_bias(ix, rows.shape[3]))  # (n, layers, b, h, 1+M, L)
            if self._use_lse:
                read = read_mass(reads, lses, self._scale)  # (n, layers, batch, heads, seg_len)
            else:
                read = reads[..., 0, :].float()
            stats, values, pos = row_metrics(probs, mean_over_content(read, ix), ix, self.config.top_k)
        for i, row in enumerate(pending):
            row.update(stats=stats[i], top_values=None if values is None else values[i],
                       top_pos=None if pos is None else pos[i])
            self._buffer.append(row)

    def _map_meta(self) -> dict:
        ix = self.index
        tokenizer = self.model.tokenizer
        labels = []
        for b in range(self.batch):
            ids = self._ids[b, : int(ix.lengths[b])].tolist()
            tokens = tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else [f"id:{i}" for i in ids]
            labels.append(position_labels(ix, tokens, b))
        return {
            "layers": list(self.map_layers),
            "heads": list(self.map_heads),
            "n_positions": ix.n_positions,
            "lengths": ix.lengths.tolist(),
            "starts": list(self.starts),
            "has_fact": ix.has_fact.tolist(),
            "labels": labels,
        }

    def _flush_tables(self) -> None:
        self._summarize_pending()
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        self.writer.release(self._row_bytes * len(rows))

        def stack(key):
            return torch.stack([r[key] for r in rows])

        def stack_lay(field):
            return torch.stack([getattr(r["ix"], field) for r in rows]).cpu().numpy()

        dyn, eff_rank = memory_dynamics(stack("memory_out"), stack("memory_in"))  # (S, batch, M, 3), (S, batch)
        segments = np.array([r["segment"] for r in rows])
        frame = summary_frame(segments, stack("stats").cpu().numpy(), dyn.cpu().numpy(), eff_rank.cpu().numpy(),
                              stack_lay("active"), stack_lay("has_fact"))
        self.writer.add_table(SUMMARIES_FILE, frame)
        if self.config.top_k:
            values, pos = stack("top_values").cpu().numpy(), stack("top_pos").cpu().numpy()  # (S, layers, batch, M, k)
            offsets = pos - rows[0]["ix"].prefix_len
            lengths = stack_lay("lengths")  # (S, batch)
            valid = (offsets >= 0) & (offsets < lengths[:, None, :, None, None]) & (values > 0)
            width = max(r["ids"].shape[1] for r in rows)
            ids = np.zeros((len(rows), self.batch, max(width, 1)), dtype=np.int64)
            for i, r in enumerate(rows):
                ids[i, :, : r["ids"].shape[1]] = r["ids"].cpu().numpy()
            s_i = np.arange(len(rows))[:, None, None, None, None]
            b_i = np.arange(self.batch)[None, None, :, None, None]
            token_ids = ids[s_i, b_i, np.clip(offsets, 0, ids.shape[-1] - 1)]  # (S, layers, batch, M, k)
            starts = np.array([r["starts"] for r in rows])  # (S, batch)
            written = written_frame(segments, values, offsets, starts, token_ids, valid, self.facts)
            self.writer.add_table(WRITTEN_FILE, written)


def _empty_written():
    z = np.zeros((0, 1, 1, 1, 1))
    return written_frame(np.zeros(0, np.int64), z, z.astype(int), np.zeros((0, 1), int), z.astype(int), z.astype(bool))


def _cell_args(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor]:
    names = ("input_ids", "attention_mask", "memory")
    values = list(args) + [kwargs[n] for n in names[len(args):]]
    return values[0], values[1], values[2]


def _is_sample(x) -> bool:
    return hasattr(x, "segments") and hasattr(x, "facts")


def record(model, inputs, config: TraceConfig | None = None, out: str | Path | None = None,
           facts: Sequence | None = None, labels: Tensor | None = None, overwrite: bool = False,
           attention_mask: Tensor | None = None, hooks: Mapping[str, Callable[[Tensor, str], None]] | None = None):
    """Run `inputs` through `model` under torch.no_grad() while recording; returns (RMTOutput, Trace).

    inputs: a (batch, length) or (length,) token tensor (with its `attention_mask`, if padded), a task
    Sample or list of Samples (facts and length are then taken from them), or an iterable of
    (batch, <= segment_size) segments. `hooks`: see `Recorder`.
    """
    n_segments = None
    if _is_sample(inputs):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(_is_sample(s) for s in inputs):
        samples = list(inputs)
        facts = facts if facts is not None else fact_positions(samples)
        n_segments = samples[0].n_segments
        if {(s.n_tokens, s.segment_size) for s in samples} != {(samples[0].n_tokens, samples[0].segment_size)}:
            raise ValueError("samples recorded together must share their length and segment size")
        segments: Iterable = (torch.stack(seg) for seg in zip(*(s.segments() for s in samples)))
        run = lambda: model.stream(segments, n_segments=n_segments, labels=labels)  # noqa: E731
    elif isinstance(inputs, Tensor):
        ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)
        longest = ids.shape[1] if attention_mask is None else int(attention_mask.sum(-1).max())
        n_segments = -(-longest // model.config.segment_size)
        run = lambda: model(ids, attention_mask=attention_mask, labels=labels)  # noqa: E731
    else:
        run = lambda: model.stream(inputs, labels=labels)  # noqa: E731
    with torch.no_grad(), Recorder(model, config, out=out, facts=facts, n_segments=n_segments,
                                   overwrite=overwrite, hooks=hooks) as rec:
        output = run()
    return output, rec.trace
