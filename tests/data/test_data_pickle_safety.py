"""The CIFAR reader must never run code from a crafted pickle."""

import io
import pickle

import pytest

from robustsnn.data.formats import _load_official_pickle
from robustsnn.errors import UserError

CALLS: list[str] = []


def _record(text: str) -> None:
    CALLS.append(text)


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_record, ("ran",))


def test_crafted_pickle_is_refused_without_running_code() -> None:
    blob = pickle.dumps({b"data": _Payload()}, protocol=2)
    with pytest.raises(UserError, match="refusing to load global"):
        _load_official_pickle(io.BytesIO(blob), "evil_batch")
    assert CALLS == []
