"""Saved adversarial examples: every break an evaluation counts, stored exactly and compactly.

A robust accuracy is a claim about specific images, so ``evaluate --save-adversarial`` keeps,
for every sample an attack breaks, the adversarial example that broke it, the member that found
it, and the clean and adversarial logits of the model's real forward pass (default estimator,
float32, one sample at a time so the numbers do not depend on batch composition). Anyone can
then re-check each break (``robustsnn recheck``), look at it, or run it on another model.

File ``adversarial.safetensors`` beside ``evaluation.json`` (``k`` broken samples, rows in the
order of the records)::

    index          int64  [k]          dataset index of the sample
    label          int64  [k]          its true label
    member         int64  [k]          position in the metadata's ``members`` list
    clean_uint8    uint8  [k, C, H, W] the clean image x 255, when every clean image is
                                       uint8-exact (``to_float(u) == x`` bit for bit);
    clean_float32  float32[k, C, H, W] otherwise
    eps            float32[1]          the radius (pixel codes refer to it)
    encoding       uint8  [k]          0: float16 perturbation, 1: float32 perturbation,
                                       2: the adversarial image itself as float32,
                                       3: pixel codes (uint8 per pixel: clean, clean + eps,
                                       clean - eps (clamped to [0, 1]), 0, 1, or "other")
    perturbation_float16 / perturbation_float32 / adversarial_float32 / pixel_codes: the rows
                   of each encoding; pixel_other_float32: the "other" pixels' values, in order
    clean_logits, adversarial_logits float32 [k, classes]

The adversarial image is ``clean + perturbation.float()`` in float32; each row takes the smallest
encoding that reconstructs the attack's float32 image bit for bit: a float16 perturbation (2
bytes per pixel), pixel codes (1 byte per pixel plus 4 per pixel not on the eps-ball's or
[0, 1]'s boundary nor unchanged), a float32 perturbation (4 bytes), or the image itself. Every
write checks the reconstruction (:func:`encode`).

Resume: with a state folder, each finished batch's examples are written (atomically, before the
batch counts as finished) to ``adversarial-parts/<fingerprint>-batch<b>.safetensors``; a resumed
run reloads them, so an interrupted and resumed run writes the same file. Under torchrun each rank
keeps its own batches' parts and the parts are gathered like the records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.io.atomic import atomic_write_bytes

ADVERSARIAL_FILE = "adversarial.safetensors"
PARTS_DIR = "adversarial-parts"
FORMAT = "robustsnn-adversarial"
FORMAT_VERSION = 1
EPS_TOLERANCE = 1e-5
"""Slack on the eps-ball (pixels): float32 rounding of ``x +- eps`` is about 6e-8."""

ENCODINGS = ("perturbation_float16", "perturbation_float32", "adversarial_float32", "pixel_codes")
# pixel codes: where the attacked pixel sits (most of an L-inf attack's pixels end on the
# boundary of the eps-ball or of [0, 1]); CODE_OTHER pixels are stored as float32 values
CODE_CLEAN, CODE_UP, CODE_DOWN, CODE_ZERO, CODE_ONE, CODE_OTHER = range(6)


def _candidates(clean: Tensor, eps: Tensor) -> list[Tensor]:
    """The pixel value each code stands for (float32 arithmetic, as attacks compute bounds)."""
    return [
        clean,
        torch.clamp(clean + eps, 0.0, 1.0),
        torch.clamp(clean - eps, 0.0, 1.0),
        torch.zeros_like(clean),
        torch.ones_like(clean),
    ]


def _pixel_codes(clean: Tensor, adversarial: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Per pixel, the first code whose value equals the adversarial pixel bit for bit."""
    codes = torch.full(adversarial.shape, CODE_OTHER, dtype=torch.uint8)
    for code, value in reversed(list(enumerate(_candidates(clean, eps)))):
        codes[adversarial == value] = code
    return codes, adversarial


def _from_codes(clean: Tensor, codes: Tensor, other: Tensor, eps: Tensor) -> Tensor:
    out = torch.empty_like(clean)
    for code, value in enumerate(_candidates(clean, eps)):
        mask = codes == code
        out[mask] = value[mask]
    out[codes == CODE_OTHER] = other.float()  # row-major order, rows in file order
    return out


@dataclass
class AdversarialSet:
    """Broken samples of one evaluation, in record order (float32 images, CPU tensors)."""

    index: Tensor  # int64 [k]
    label: Tensor  # int64 [k]
    member: list[str]
    clean: Tensor  # float32 [k, ...]
    adversarial: Tensor  # float32 [k, ...]
    clean_logits: Tensor  # float32 [k, classes]
    adversarial_logits: Tensor  # float32 [k, classes]

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @staticmethod
    def empty(sample_shape: Sequence[int] = (), classes: int = 0) -> AdversarialSet:
        images = torch.zeros((0, *sample_shape), dtype=torch.float32)
        logits = torch.zeros((0, classes), dtype=torch.float32)
        return AdversarialSet(
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            [],
            images,
            images.clone(),
            logits,
            logits.clone(),
        )

    def select(self, rows: Sequence[int]) -> AdversarialSet:
        at = torch.tensor(list(rows), dtype=torch.long)
        return AdversarialSet(
            self.index[at],
            self.label[at],
            [self.member[i] for i in rows],
            self.clean[at],
            self.adversarial[at],
            self.clean_logits[at],
            self.adversarial_logits[at],
        )


def concat(parts: Sequence[AdversarialSet]) -> AdversarialSet:
    """The parts one after the other (empty parts of any shape are skipped)."""
    full = [p for p in parts if len(p)]
    if not full:
        return parts[0] if parts else AdversarialSet.empty()
    return AdversarialSet(
        torch.cat([p.index for p in full]),
        torch.cat([p.label for p in full]),
        [m for p in full for m in p.member],
        torch.cat([p.clean for p in full]),
        torch.cat([p.adversarial for p in full]),
        torch.cat([p.clean_logits for p in full]),
        torch.cat([p.adversarial_logits for p in full]),
    )


def ordered_like(examples: AdversarialSet, order: Sequence[int]) -> AdversarialSet:
    """The examples sorted by the position of their dataset index in ``order``."""
    position = {int(i): p for p, i in enumerate(order)}
    rows = sorted(range(len(examples)), key=lambda r: position[int(examples.index[r])])
    return examples.select(rows)


# --------------------------------------------------------------------------- validity


def valid_examples(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Per sample: finite, every pixel in [0, 1], and within ``eps`` (+ EPS_TOLERANCE) of x.

    The evaluation counts an example that fails this as not broken (an attack bug must not
    lower a robust accuracy)."""
    flat_adv = x_adv.detach().reshape(x_adv.shape[0], -1)
    flat = x.detach().reshape(x.shape[0], -1).to(flat_adv.dtype)
    finite = torch.isfinite(flat_adv).all(1)
    in_range = ((flat_adv >= 0) & (flat_adv <= 1)).all(1)
    distance = (flat_adv - flat).abs().amax(1) if flat.shape[1] else finite.new_zeros(0)
    in_ball = distance <= eps + EPS_TOLERANCE
    return finite & in_range & in_ball


# --------------------------------------------------------------------------- logits


def single_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Float32 logits of the model's real forward pass, one sample at a time (CPU ``[k, K]``).

    One sample per call makes a logit independent of which other samples were broken in the
    same batch, so reloading an example reproduces its recorded logits bit for bit. Each call
    runs with torch's global generator seeded from a digest of the sample (the caller's state
    restored after), so a random model's stored logits are one reproducible draw; a
    deterministic model's are unchanged."""
    from robustsnn.evaluation.stochastic import seeded_global_rng
    from robustsnn.evaluation.views import derive_seed, is_snn, tensor_digest
    from robustsnn.snn.estimators import DEFAULT_ESTIMATOR

    rows = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            sample = x[i : i + 1]
            seed = derive_seed(0, "saved-logits", tensor_digest(sample))
            with seeded_global_rng(seed, sample.device):
                if is_snn(model):
                    with model.use_estimator(DEFAULT_ESTIMATOR):  # type: ignore[operator]
                        rows.append(model(sample).float().cpu())
                else:
                    rows.append(model(sample).float().cpu())
    if not rows:
        return torch.zeros((0, 0), dtype=torch.float32)
    return torch.cat(rows)


def collect(
    model: nn.Module,
    clean: Tensor,
    adversarial: Tensor,
    index: Sequence[int],
    label: Tensor,
    member: Sequence[str],
) -> AdversarialSet:
    """The broken samples of one batch with their logits (rows in record order)."""
    clean = clean.detach().float()
    adversarial = adversarial.detach().float()
    return AdversarialSet(
        torch.tensor([int(i) for i in index], dtype=torch.long),
        label.detach().cpu().long().reshape(-1),
        [str(m) for m in member],
        clean.cpu().contiguous(),
        adversarial.cpu().contiguous(),
        single_logits(model, clean),
        single_logits(model, adversarial),
    )


# --------------------------------------------------------------------------- encoding


def _uint8_exact(clean: Tensor) -> Tensor | None:
    """``clean`` as uint8 pixels when ``to_float`` of them gives it back bit for bit."""
    pixels = (clean * 255.0).round().clamp(0, 255).to(torch.uint8)
    back = pixels.to(torch.float32).div_(255.0)
    return pixels if torch.equal(back, clean) else None


def encode(examples: AdversarialSet, metadata: Mapping[str, Any]) -> dict[str, Tensor]:
    """The file's tensors for ``examples``; checks that decoding gives every image back exactly.

    Raises RuntimeError if a reconstruction is not bit-exact (a bug, never expected)."""
    clean = examples.clean.float().contiguous()
    adversarial = examples.adversarial.float().contiguous()
    tensors: dict[str, Tensor] = {
        "index": examples.index.long().contiguous(),
        "label": examples.label.long().contiguous(),
        "member": torch.tensor(
            [list(metadata["members"]).index(m) for m in examples.member], dtype=torch.long
        ),
        "clean_logits": examples.clean_logits.float().contiguous(),
        "adversarial_logits": examples.adversarial_logits.float().contiguous(),
    }
    pixels = _uint8_exact(clean)
    if pixels is not None:
        tensors["clean_uint8"] = pixels.contiguous()
        base = pixels.to(torch.float32).div_(255.0)
    else:
        tensors["clean_float32"] = clean
        base = clean
    eps = torch.tensor(float(metadata.get("eps", 0.0)), dtype=torch.float32)
    tensors["eps"] = eps.reshape(1)
    delta = adversarial - base
    half = delta.to(torch.float16)
    flat_adv = adversarial.flatten(1)
    numel = flat_adv.shape[1]
    codes, other = _pixel_codes(base, adversarial, eps)
    others = (codes == CODE_OTHER).flatten(1).sum(1)
    exact16 = ((base + half.float()).flatten(1) == flat_adv).all(1)
    exact32 = ((base + delta).flatten(1) == flat_adv).all(1)
    # bytes per row of each encoding (a large number where it is not exact): the smallest wins
    sizes = torch.stack(
        [
            torch.where(exact16, 2 * numel, 1 << 40),
            torch.where(exact32, 4 * numel, 1 << 40),
            torch.full_like(others, 4 * numel),
            numel + 4 * others,
        ],
        1,
    )
    encoding = sizes.argmin(1).to(torch.uint8)
    tensors["encoding"] = encoding
    sample_shape = tuple(adversarial.shape[1:])
    for code, name in enumerate(ENCODINGS):
        rows = encoding == code
        source = (half, delta, adversarial, codes)[code]
        tensors[name] = source[rows].contiguous().reshape(-1, *sample_shape)
    coded = (encoding == ENCODINGS.index("pixel_codes")).nonzero().squeeze(1)
    tensors["pixel_other_float32"] = (
        torch.cat([other[i][codes[i] == CODE_OTHER] for i in coded.tolist()])
        if coded.numel()
        else torch.zeros(0, dtype=torch.float32)
    )
    back = decode_tensors(tensors)
    if not torch.equal(back.adversarial, adversarial) or not torch.equal(back.clean, clean):
        raise RuntimeError("adversarial examples do not reconstruct exactly; storage bug")
    return tensors


def _check_layout(tensors: Mapping[str, Tensor], members: Sequence[str]) -> None:
    """Raise ValueError (one line, what is wrong) unless the tensors form a consistent file."""
    required = ("index", "label", "member", "encoding", "clean_logits", "adversarial_logits", "eps")
    missing = [k for k in (*required, *ENCODINGS, "pixel_other_float32") if k not in tensors]
    if not ("clean_uint8" in tensors or "clean_float32" in tensors):
        missing.append("clean_uint8/clean_float32")
    if missing:
        raise ValueError(f"missing tensors {', '.join(missing)}")
    k = int(tensors["index"].reshape(-1).shape[0])
    clean = tensors["clean_uint8"] if "clean_uint8" in tensors else tensors["clean_float32"]
    for name in ("index", "label", "member", "encoding"):
        t = tensors[name]
        if t.dim() != 1 or t.shape[0] != k:
            raise ValueError(f"{name} has shape {list(t.shape)}, expected [{k}]")
    if clean.dim() < 1 or clean.shape[0] != k:
        raise ValueError(f"clean images have shape {list(clean.shape)}, expected {k} rows")
    sample_shape = tuple(clean.shape[1:])
    if k and int(tensors["index"].min()) < 0:
        raise ValueError(f"sample index {int(tensors['index'].min())} is negative")
    encoding = tensors["encoding"].long()
    if k and (int(encoding.min()) < 0 or int(encoding.max()) >= len(ENCODINGS)):
        raise ValueError(f"encoding code out of range 0..{len(ENCODINGS) - 1}")
    for code, name in enumerate(ENCODINGS):
        rows = int((encoding == code).sum())
        stored = tensors[name]
        if tuple(stored.shape) != (rows, *sample_shape):
            raise ValueError(
                f"{name} has shape {list(stored.shape)}, the encoding column needs "
                f"{[rows, *sample_shape]}"
            )
    codes = tensors["pixel_codes"]
    if codes.numel() and int(codes.long().max()) > CODE_OTHER:
        raise ValueError(f"pixel code {int(codes.long().max())} out of range 0..{CODE_OTHER}")
    others = int((codes == CODE_OTHER).sum())
    if tensors["pixel_other_float32"].numel() != others:
        raise ValueError(
            f"pixel_other_float32 holds {tensors['pixel_other_float32'].numel()} values, the "
            f"pixel codes need {others}"
        )
    if tensors["eps"].numel() != 1:
        raise ValueError("eps is not one value")
    for name in ("clean_logits", "adversarial_logits"):
        t = tensors[name]
        if t.dim() != 2 or t.shape[0] != k:
            raise ValueError(f"{name} has shape {list(t.shape)}, expected [{k}, classes]")
    member = tensors["member"].long()
    if k and members and (int(member.min()) < 0 or int(member.max()) >= len(members)):
        bad = int(member.max()) if int(member.max()) >= len(members) else int(member.min())
        raise ValueError(f"member index {bad} out of range (the file names {len(members)} members)")


def decode_tensors(tensors: Mapping[str, Tensor], members: Sequence[str] = ()) -> AdversarialSet:
    """The examples the file's tensors describe (float32 images).

    Raises ValueError (one line) on an inconsistent layout: a malformed file never reaches an
    IndexError or a shape error."""
    _check_layout(tensors, members)
    if "clean_uint8" in tensors:
        clean = tensors["clean_uint8"].to(torch.float32).div_(255.0)
    else:
        clean = tensors["clean_float32"].float()
    encoding = tensors["encoding"].long()
    adversarial = clean.clone()
    for code, name in enumerate(ENCODINGS):
        rows = (encoding == code).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        stored = tensors[name]
        if name == "adversarial_float32":
            adversarial[rows] = stored.float()
        elif name == "pixel_codes":
            eps = tensors["eps"].float().reshape(())
            adversarial[rows] = _from_codes(
                clean[rows], stored, tensors["pixel_other_float32"], eps
            )
        else:
            adversarial[rows] = clean[rows] + stored.float()
    member_ids = tensors["member"].tolist()
    names = [members[i] if members else str(i) for i in member_ids]
    return AdversarialSet(
        tensors["index"].long(),
        tensors["label"].long(),
        names,
        clean,
        adversarial,
        tensors["clean_logits"].float(),
        tensors["adversarial_logits"].float(),
    )


def images_digest(examples: AdversarialSet) -> str:
    """SHA-256 of the float32 clean and adversarial images (what the encoding must give back)."""
    h = hashlib.sha256()
    for t in (examples.clean, examples.adversarial):
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _content_digest(meta_json: str, data: bytes) -> str:
    """SHA-256 of a file's metadata JSON (without the digest) and its tensor bytes."""
    return hashlib.sha256(meta_json.encode("utf-8") + b"\0" + data).hexdigest()


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the tensor bytes of a safetensors file (ValueError if malformed)."""
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("the header is longer than the file (truncated)")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header, data[8 + size :]


def to_bytes(examples: AdversarialSet, metadata: Mapping[str, Any]) -> bytes:
    """The safetensors bytes of ``examples`` (deterministic: the same examples, same bytes).

    The header carries ``images_sha256`` (the float32 images the encoding gives back) and
    ``content_sha256`` (the metadata and every tensor byte), so a changed byte is found."""
    meta = dict(metadata)
    meta.pop("content_sha256", None)
    meta.setdefault("members", sorted(set(examples.member)))
    tensors = encode(examples, meta)
    meta["images_sha256"] = images_digest(examples)
    body = {"version": FORMAT_VERSION, **meta}
    text = json.dumps(body, sort_keys=True)
    # one header key: safetensors writes several keys in a varying order (not byte-stable)
    draft = bytes(save_bytes(tensors, metadata={FORMAT: text}))
    digest = _content_digest(text, _split(draft)[1])
    header = {FORMAT: json.dumps({**body, "content_sha256": digest}, sort_keys=True)}
    return bytes(save_bytes(tensors, metadata=header))


NO_HASH = "no hash recorded"


def integrity_problems(data: bytes, examples: AdversarialSet | None = None) -> list[str]:
    """What does not match the digests a file carries ([] when all match); a file written
    before digests existed gives ``[NO_HASH]`` (a warning, not a failure)."""
    try:
        header, body = _split(data)
        meta = json.loads(header["__metadata__"][FORMAT])
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
    except Exception as exc:  # noqa: BLE001 - malformed: said in one line
        return [f"unreadable header ({' '.join(str(exc).split())[:120]})"]
    recorded = meta.pop("content_sha256", None)
    if recorded is None:
        return [NO_HASH]
    problems = []
    if _content_digest(json.dumps(meta, sort_keys=True), body) != recorded:
        problems.append("content hash mismatch: the file was changed after it was written")
    if examples is not None and meta.get("images_sha256") not in (None, images_digest(examples)):
        problems.append(
            "the pixel encoding does not reproduce the adversarial images that were written"
        )
    return problems


def from_bytes(data: bytes, source: str = "") -> tuple[AdversarialSet, dict[str, Any]]:
    """Examples and metadata from :func:`to_bytes`' output (any malformed file: one line)."""
    try:
        header, _ = _split(data)
        if FORMAT not in (header.get("__metadata__") or {}):
            raise ValueError("not a robustsnn adversarial file")
        meta = json.loads(header["__metadata__"][FORMAT])
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
        meta.pop("version", None)
        tensors = load_bytes(data)
        members = meta.get("members", [])
        if not isinstance(members, list):
            raise ValueError("its members are not a list")
        examples = decode_tensors(tensors, [str(m) for m in members])
    except Exception as exc:  # any malformed file is one user-facing line
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"{source or 'file'} is not a readable adversarial-examples file ({detail}); "
            "re-run the evaluation with --save-adversarial"
        ) from None
    return examples, meta


def write(path: str | Path, examples: AdversarialSet, metadata: Mapping[str, Any]) -> int:
    """Write ``examples`` to ``path`` atomically; return the file size in bytes."""
    data = to_bytes(examples, metadata)
    atomic_write_bytes(path, data)
    return len(data)


def read(path: str | Path) -> tuple[AdversarialSet, dict[str, Any]]:
    """The examples and metadata saved at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"no saved adversarial examples at {path}; re-run the evaluation with "
            "--save-adversarial (robustsnn run saves them by default)"
        )
    return from_bytes(path.read_bytes(), str(path))


# --------------------------------------------------------------------------- resume parts


class PartStore:
    """Per-batch example files of one evaluation (resume), or in memory without a folder."""

    def __init__(self, state_dir: str | Path | None, fingerprint: Mapping[str, Any]) -> None:
        self.folder = Path(state_dir) / PARTS_DIR if state_dir is not None else None
        text = json.dumps(fingerprint, sort_keys=True, default=str)
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.eps = float(fingerprint.get("eps", 0.0))
        self.parts: dict[int, AdversarialSet] = {}

    def _path(self, batch: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.fingerprint}-batch{batch:06d}.safetensors"

    def load(self, batch: int) -> bool:
        """Reload batch ``batch``'s part from disk; False if there is none (re-run the batch)."""
        if self.folder is None or not self._path(batch).is_file():
            return False
        try:
            data = self._path(batch).read_bytes()
            examples = from_bytes(data)[0]
        except (UserError, OSError):
            return False
        if integrity_problems(data, examples) not in ([], ["no hash recorded"]):
            return False  # a changed part: its batch runs again
        self.parts[batch] = examples
        return True

    def save(self, batch: int, examples: AdversarialSet) -> None:
        """Keep batch ``batch``'s part (and write it, before the batch counts as finished)."""
        self.parts[batch] = examples
        if self.folder is not None:
            meta = {"members": sorted(set(examples.member)), "eps": self.eps}
            write(self._path(batch), examples, meta)


__all__ = [
    "ADVERSARIAL_FILE",
    "EPS_TOLERANCE",
    "AdversarialSet",
    "PartStore",
    "collect",
    "concat",
    "decode_tensors",
    "encode",
    "images_digest",
    "integrity_problems",
    "ordered_like",
    "read",
    "single_logits",
    "valid_examples",
    "write",
]
