"""Two CPU processes (gloo) share one global batch and follow the one-process loss curve."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, name: str, nproc: int, *extra: str) -> pd.DataFrame:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "tests/train/multiprocess_script.py"),
           str(tmp_path / name), *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_parquet(tmp_path / name / "metrics.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("slots",)], ids=["plain", "slot and retention losses"])
def test_two_processes_match_one(tmp_path, extra):
    one = _run(tmp_path, "one", 1, *extra)
    two = _run(tmp_path, "two", 2, *extra)
    assert set(one["processes"]) == {1} and set(two["processes"]) == {2}
    train_one, train_two = one[one["kind"] == "train"], two[two["kind"] == "train"]
    assert len(train_one) == len(train_two) == 12
    diff = (train_one["loss"].to_numpy() - train_two["loss"].to_numpy())
    print(f"largest loss difference, 2 processes vs 1: {abs(diff).max():.2e}")
    assert abs(diff).max() < 1e-4, f"loss curves differ by up to {abs(diff).max()}"
    if extra:  # the slot heads' own loss and accuracy are the global batch's, as one process logs them
        # (NaN in both where no batch of the window had memory to read)
        assert train_one["slot_loss"].notna().any()
        np.testing.assert_allclose(train_two["slot_loss"], train_one["slot_loss"], rtol=0, atol=1e-4)
        np.testing.assert_allclose(train_two["slot_accuracy"], train_one["slot_accuracy"], rtol=0, atol=1e-6)
        assert train_one["memory_change"].notna().any()
        np.testing.assert_allclose(train_two["memory_change"], train_one["memory_change"], rtol=1e-4, atol=1e-7)
    val_one, val_two = one[one["kind"] == "val"]["accuracy"], two[two["kind"] == "val"]["accuracy"]
    assert val_one.tolist() == val_two.tolist()
