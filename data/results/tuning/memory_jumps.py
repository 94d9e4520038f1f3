"""Whether a noise segment that moves reasoning's memory most does so from any memory or only its own.

Usage: python data/results/tuning/memory_jumps.py

Runs test samples 1, 2, 3 and 5 of 64 segments through the slot-taught 32-segment model (bf16 autocast), then
feeds each of five noise segments (three of the largest changes in `memory_drift.parquet`, two of the smallest,
named sample/segment) to the memory four samples hold at some noise segment after their facts, and prints the
relative squared change of memory each causes.
"""

import json, torch
from rmt_lab.model import RecurrentWrapper
from rmt_lab.tasks import TaskConfig, TaskGenerator
run = "data/results/tuning/slots-long-32-lr1e-4"
m = RecurrentWrapper.from_pretrained(f"{run}/checkpoints/stage-32")
gen = TaskGenerator(TaskConfig.from_dict(json.load(open(f"{run}/config.json"))["task"]).at_segments(64))
def memories(i):
    ids = torch.as_tensor(gen.sample("test", i).tokens())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(ids.unsqueeze(0), keep=["memory"])
    return ids, [s["memory"].float() for s in out.segments]
data = {i: memories(i) for i in (1, 2, 3, 5)}
segs = {f"{kind} {i}/{n}": data[i][0][n * 64:(n + 1) * 64]
        for kind, i, n in (("jump", 2, 45), ("jump", 3, 45), ("jump", 1, 12), ("calm", 3, 59), ("calm", 1, 46))}
states = {f"{i} after {n}": data[i][1][n] for i, n in ((2, 44), (5, 38), (1, 40), (3, 50))}
for sname, seg in segs.items():
    out = []
    for mname, mem in states.items():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            new = m.cell(seg.unsqueeze(0), None, mem).memory.float()
        out.append(f"{float((new - mem).pow(2).sum() / mem.pow(2).sum()):.4f}")
    print(sname, out)
