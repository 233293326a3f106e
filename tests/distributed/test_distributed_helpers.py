"""robustsnn.distributed: world size 1 starts nothing; device choice under torchrun."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from robustsnn import distributed
from robustsnn.errors import UserError


@pytest.fixture
def single(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def torchrun_rank1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")


def test_world_size_one_is_todays_code_path(single: None) -> None:
    assert distributed.init("cpu") == "cpu" and distributed.init("cuda:3") == "cuda:3"
    assert not dist.is_initialized()  # no process group was started
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main() and distributed.launched_world_size() == 1
    distributed.barrier()
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object(7) == 7
    assert distributed.on_main(lambda: "x") == "x"
    model = nn.Linear(2, 2)
    before = [p.clone() for p in model.parameters()]
    distributed.broadcast_module_state(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    distributed.shutdown()


def test_cuda_becomes_cuda_local_rank(
    torchrun_rank1: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.resolve_device("cuda") == "cuda:1"
    assert distributed.resolve_device("cpu") == "cpu"
    assert distributed.local_rank() == 1


def test_bad_devices_under_torchrun_are_one_line(
    torchrun_rank1: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match="give --device cuda"):
        distributed.resolve_device("cuda:0")  # every process would share one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="local rank 1 but this node has 1 CUDA device"):
        distributed.resolve_device("cuda")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        distributed.launched_world_size()
