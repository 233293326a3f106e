"""The one-command GPU script of the kernel issue runs end to end on CPU (tiny sizes, the
kernels through Triton's interpreter), so a lent GPU's minutes are not spent on a broken
script. Slow (about 2-3 CPU-minutes): ``pytest -m slow tests/snn/test_triton_gpu_script.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from robustsnn.snn import triton_kernels

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not triton_kernels.available(), reason="triton is not installed")
def test_gpu_all_script_cpu_path(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "QUICK": "1",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_all.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = tmp_path / "gpu_all"
    log = (work / "log.txt").read_text()
    assert log.count("exit 0 after") == 4, log
    check = json.loads((work / "kernel_check.json").read_text())
    assert check["all_passed"] and check["checks"]
    for model in ("vgg_small", "vgg11"):
        result = json.loads((work / f"bench_layers-{model}.json").read_text())
        block = result["timing"]["1"]
        assert "robustsnn-triton" in block["summary"]["fwdbwd"]
        assert block["check"]["robustsnn-triton"]["max_abs_logit_diff"] == 0.0
    ensemble = json.loads((work / "bench_ensemble-reliable.json").read_text())
    assert ensemble["summary"]["reference"]["verdicts_differing_from_fused"] == []
    with tarfile.open(tmp_path / "gpu_all.tar") as tar:
        names = tar.getnames()
    assert "gpu_all/bench_layers-vgg11.json" in names
