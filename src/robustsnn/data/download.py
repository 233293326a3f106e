"""Download of official dataset archives with MD5 verification."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from robustsnn.errors import UserError


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` and check its MD5; ``dest`` appears only when it is verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tqdm(
            desc=f"download {dest.name}", unit="B", unit_scale=True, disable=None, leave=False
        ) as bar:

            def report(blocks: int, block_size: int, total: int) -> None:
                if total > 0:
                    bar.total = total
                bar.update(blocks * block_size - bar.n)

            try:
                urllib.request.urlretrieve(url, tmp, reporthook=report)
            except (urllib.error.URLError, OSError) as err:
                raise UserError(
                    f"could not download {url} to {dest.parent}: {err}; check the network or "
                    f"download it by hand into {dest.parent}"
                ) from None
        got = md5sum(tmp)
        if got != md5:
            raise UserError(
                f"checksum mismatch for {url}: md5 {got}, expected {md5}; the download is "
                f"corrupt or incomplete, retry, or place a good copy at {dest}"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return dest
