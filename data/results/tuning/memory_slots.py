"""Reasoning trained with the memory supervised by slot: an auxiliary loss on what memory tokens hold.

Usage: python memory_slots.py INIT OUT SEGMENTS STEPS LR [SUBSET] [AUX_WEIGHT] [MODE]
  INIT     an RMT checkpoint folder (e.g. data/results/runs/base-reasoning/checkpoints/stage-7)
  OUT      folder for the trained weights (saved at every validation); OUT.parquet gets the validation log
  SUBSET   a reasoning subset (recall, recall_match, ...) or "all" (the whole task)
  MODE     "directions" (default): memory token d (d = 0..3 in DIRECTIONS order) must name the place that
           lies in direction d from the centre, or "none" (class 6): a memory laid out by direction, which a
           question reads by position. "facts": memory token k must name fact k's subject, word and object.
The auxiliary targets apply to the memory after every segment from the one holding the last fact to the
one before the question's (the memory the question's segment reads, and every memory between); a sample
whose facts reach the question's segment adds none. Linear heads (one per slot) train with the model and
are thrown away: evaluation is the task's, the classifier on [CLS] of the last segment. Batch 32, AdamW
(weight decay 0.001), warmup 20 steps then linear decay, value clipping 5.0, bf16 autocast: the base
config's settings. Validation: 512 samples of the same subset every 50 steps, with each slot's accuracy
on the samples that have targets.
"""
import re
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from rmt_lab.io import write_parquet
from rmt_lab.model.wrapper import RecurrentWrapper
from rmt_lab.tasks import TaskGenerator
from rmt_lab.tasks.dataset import collate
from rmt_lab.tasks.registry import DIRECTIONS, PLACES
from rmt_lab.train.config import preset

init, out, n_seg, steps, lr = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
subset = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "all" else None
aux_weight = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
mode = sys.argv[8] if len(sys.argv) > 8 else "directions"
RELATION = re.compile(r"The (\w+) is (\w+) of the (\w+)\.")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
torch.manual_seed(0)
config = preset("base", "reasoning")
gen = TaskGenerator(config.task_at(n_seg, subset=subset))
size = gen.config.segment_size
model = RecurrentWrapper.from_pretrained(init)
width = model.cell.d_model
slots, classes = (4, 7) if mode == "directions" else (2, 16)  # facts: 6 subject + 4 word + 6 object
heads = torch.nn.ModuleList([torch.nn.Linear(width, classes) for _ in range(slots)])
params = [p for p in model.parameters() if p.requires_grad] + list(heads.parameters())
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.001)


def targets(sample) -> list[int]:
    triples = [RELATION.fullmatch(f.text).groups() for f in sample.facts]
    if mode == "facts":
        return [v for a, w, b in triples for v in (PLACES.index(a), DIRECTIONS.index(w), PLACES.index(b))]
    centre = ({triples[0][0], triples[0][2]} & {triples[1][0], triples[1][2]}).pop()
    row = [6] * 4
    for a, w, b in triples:  # "a is w of b": the place that is not the centre, and its direction from it
        place, direction = (a, w) if b == centre else (b, OPPOSITE[w])
        row[DIRECTIONS.index(direction)] = PLACES.index(place)
    return row


def batch(split: str, first: int, count: int):
    items, rows, spans = [], [], []
    for i in range(first, first + count):
        s = gen.sample(split, i)
        items.append({"input_ids": s.tokens(), "label": s.label, "answer": s.answer, "index": i})
        rows.append(targets(s))
        last_fact = max((f.start + len(f.token_ids) - 1) // size for f in s.facts)
        spans.append((last_fact, s.question.start // size))
    # supervised[s, b]: the memory after segment s of sample b carries both facts to the question's segment
    supervised = torch.tensor([[lo <= s < q for lo, q in spans] for s in range(n_seg)])
    return collate(items), torch.tensor(rows), supervised


def aux(memories: list[torch.Tensor], rows: torch.Tensor, supervised: torch.Tensor):
    """Mean cross-entropy over supervised (segment, sample, slot) and each slot's hits and count."""
    losses, hits, count = [], torch.zeros(slots), int(supervised.sum())
    for s, memory in enumerate(memories):
        rows_s = supervised[s]
        if not rows_s.any():
            continue
        for k in range(slots):
            logits = heads[k](memory[rows_s, k].float())
            if mode == "directions":
                parts = [(logits, rows[rows_s, k])]
            else:
                parts = [(logits[:, lo:hi], rows[rows_s, 3 * k + j]) for j, (lo, hi) in enumerate(((0, 6), (6, 10), (10, 16)))]
            for lg, y in parts:
                losses.append(F.cross_entropy(lg, y, reduction="sum") / len(parts))
                hits[k] += float((lg.argmax(-1) == y).float().sum()) / len(parts)
    loss = sum(losses) / max(count * slots, 1) if losses else torch.zeros(())
    return loss, hits, count


def validate(n: int = 512) -> dict:
    model.eval()
    right, hits, count = 0, torch.zeros(slots), 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for first in range(0, n, 64):
            b, rows, supervised = batch("validation", first, 64)
            o = model(b["input_ids"], b["attention_mask"], keep=("memory",))
            right += int((o.logits.argmax(-1) == b["labels"]).sum())
            _, h, c = aux([seg["memory"] for seg in o.segments], rows, supervised)
            hits, count = hits + h, count + c
    model.train()
    return {"val_acc": right / n, **{f"slot{k}_acc": float(hits[k]) / max(count, 1) for k in range(slots)}}


log, t0 = [], time.time()
model.train()
for step in range(1, steps + 1):
    scale = step / 20 if step <= 20 else max(0.0, (steps - step) / (steps - 20))
    for g in opt.param_groups:
        g["lr"] = lr * scale
    b, rows, supervised = batch("train", step * 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o = model(b["input_ids"], b["attention_mask"], labels=b["labels"], keep=("memory",))
    aux_loss, _, _ = aux([seg["memory"] for seg in o.segments], rows, supervised)
    (o.loss.float() + aux_weight * aux_loss).backward()
    torch.nn.utils.clip_grad_value_(params, 5.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if step % 10 == 0:
        print(f"step {step} loss {o.loss.item():.3f} aux {float(aux_loss):.3f} {time.time() - t0:.0f}s", flush=True)
    if step % 50 == 0 or step == steps:
        log.append({"step": step, "seconds": round(time.time() - t0, 1), **validate()})
        print(log[-1], flush=True)
        write_parquet(Path(f"{out}.parquet"), pd.DataFrame(log).assign(
            init=init, segments=n_seg, subset=subset or "all", lr=lr, aux_weight=aux_weight, mode=mode))
        model.save_pretrained(out)  # the weights at the last validation: a run cut off keeps them
