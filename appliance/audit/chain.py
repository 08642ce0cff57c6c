"""The hash chain and its verification, as pure functions over rows already read.

Keeping this free of I/O lets the same code verify a live database, an exported copy or a
generated chain in a property test, and keeps the security argument in one readable place:

* each entry's hash covers its content and the previous entry's hash, not its ``seq``; order
  is protected by those links and by seq contiguity, which is what lets verification tell
  a moved entry (its link points at another existing row) from a changed one;
* checkpoints sign the chain head with the appliance key, so a chain rewritten and re-hashed
  by someone holding only the database key no longer matches what was signed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.audit.models import (
    EVENT_FIELDS,
    AuditEntry,
    AuditEvent,
    Checkpoint,
    ProblemKind,
    VerificationProblem,
    VerificationResult,
)
from appliance.audit.signing import key_id, sign, signature_valid

GENESIS_HASH = "0" * 64
CONTENT_FIELDS = ("recorded_at", *EVENT_FIELDS)
# Domain prefixes: an entry hash can never be replayed as a checkpoint message or vice versa,
# and a future format gets a new prefix instead of an ambiguous reinterpretation.
ENTRY_DOMAIN = b"hygie-audit-entry-v1\x00"
CHECKPOINT_DOMAIN = b"hygie-audit-checkpoint-v1\x00"

HashLookup = Callable[[str], Sequence[int]]
"""Seqs of the stored rows whose ``hash`` is the given value (searched only on error paths)."""


def _canonical(values: Mapping[str, object]) -> bytes:
    # Sorted keys, no whitespace, ASCII only: one byte string per content, and JSON string
    # escaping makes field boundaries unambiguous whatever the values contain.
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def event_content(recorded_at: str, event: AuditEvent) -> bytes:
    """Canonical bytes of what an entry records (everything but its seq and hashes)."""
    values: dict[str, object] = {"recorded_at": recorded_at}
    values.update({field: getattr(event, field) for field in EVENT_FIELDS})
    return _canonical(values)


def entry_content(entry: AuditEntry) -> bytes:
    """Canonical bytes of a stored entry's content, for recomputing its hash."""
    return _canonical({field: getattr(entry, field) for field in CONTENT_FIELDS})


def entry_hash(prev_hash: str, content: bytes) -> str:
    """SHA-256 over the previous hash and this content; hex, the form stored in the table."""
    digest = hashlib.sha256(ENTRY_DOMAIN)
    digest.update(prev_hash.encode())
    digest.update(b"\x00")
    digest.update(content)
    return digest.hexdigest()


def make_entry(seq: int, prev_hash: str, recorded_at: str, event: AuditEvent) -> AuditEntry:
    """The entry that follows ``prev_hash``; the caller chooses seq and time, under its lock."""
    values = {field: getattr(event, field) for field in EVENT_FIELDS}
    return AuditEntry(
        seq=seq,
        recorded_at=recorded_at,
        prev_hash=prev_hash,
        hash=entry_hash(prev_hash, event_content(recorded_at, event)),
        **values,
    )


def checkpoint_message(seq: int, entry_hash: str, signed_at: str) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return CHECKPOINT_DOMAIN + _canonical(
        {"seq": seq, "entry_hash": entry_hash, "signed_at": signed_at}
    )


def make_checkpoint(
    private_key: Ed25519PrivateKey, seq: int, entry_hash: str, signed_at: str
) -> Checkpoint:
    """A signed checkpoint over entry ``seq`` whose chain hash is ``entry_hash``."""
    return Checkpoint(
        seq=seq,
        entry_hash=entry_hash,
        signed_at=signed_at,
        key_id=key_id(private_key.public_key()),
        signature=sign(private_key, checkpoint_message(seq, entry_hash, signed_at)),
    )


def checkpoint_problem(public_key: Ed25519PublicKey, checkpoint: Checkpoint) -> str | None:
    """Why ``checkpoint`` cannot be trusted, or ``None`` when ``public_key`` signed it."""
    expected_id = key_id(public_key)
    if checkpoint.key_id != expected_id:
        return (
            f"checkpoint at seq {checkpoint.seq} claims key {str(checkpoint.key_id)[:16]!r}, "
            f"not this appliance's audit key {expected_id}"
        )
    fields_ok = (
        isinstance(checkpoint.seq, int)
        and isinstance(checkpoint.entry_hash, str)
        and isinstance(checkpoint.signed_at, str)
    )
    if not fields_ok or not signature_valid(
        public_key,
        checkpoint.signature,
        checkpoint_message(checkpoint.seq, checkpoint.entry_hash, checkpoint.signed_at),
    ):
        return f"checkpoint at seq {checkpoint.seq} has a signature that does not verify"
    return None


def _well_formed(entry: AuditEntry) -> bool:
    return all(
        isinstance(getattr(entry, field), str) for field in (*CONTENT_FIELDS, "prev_hash", "hash")
    )


class ChainVerifier:
    """Verify entries fed one by one in seq order, stopping at the first problem.

    Incremental so a caller can stream a million rows from the database; ``verify_chain`` is
    the convenience wrapper for rows already in memory.
    """

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        public_key: Ed25519PublicKey,
        find_seqs: HashLookup,
    ) -> None:
        self._checkpoints = sorted(checkpoints, key=lambda checkpoint: checkpoint.seq)
        self._public_key = public_key
        self._find_seqs = find_seqs
        self._next_checkpoint = 0
        self._expected_seq = 1
        self._prev_hash = GENESIS_HASH
        self._entries_checked = 0
        self._checkpoints_checked = 0
        self._last_checkpoint_seq = 0
        self._finished = False
        self.problem: VerificationProblem | None = None
        if self._checkpoints and self._checkpoints[0].seq < 1:
            self._fail(
                "bad_checkpoint",
                self._checkpoints[0].seq,
                f"checkpoint at seq {self._checkpoints[0].seq} does not refer to any entry",
            )

    def _fail(self, kind: ProblemKind, seq: int, message: str) -> bool:
        self.problem = VerificationProblem(kind, seq, message)
        return False

    def feed(self, entry: AuditEntry) -> bool:
        """Check the next entry; ``False`` once a problem was found (stop feeding then)."""
        if self.problem is not None:
            return False
        if not (self._check_entry(entry) and self._check_checkpoints_at(entry)):
            return False
        self._prev_hash = entry.hash
        self._expected_seq = entry.seq + 1
        self._entries_checked += 1
        return True

    def _check_entry(self, entry: AuditEntry) -> bool:
        seq = entry.seq
        expected = self._expected_seq
        if seq > expected:
            if seq == expected + 1:
                missing = f"entry {expected} is"
            else:
                missing = f"entries {expected} to {seq - 1} are"
            return self._fail("removed", expected, f"{missing} missing from the log")
        if seq < expected:
            return self._fail("reordered", seq, f"entry {seq} appears twice or out of seq order")
        if not _well_formed(entry) or entry.hash != entry_hash(
            entry.prev_hash, entry_content(entry)
        ):
            return self._fail(
                "altered", seq, f"entry {seq} was changed after it was written (hash mismatch)"
            )
        if entry.prev_hash != self._prev_hash:
            return self._fail(*self._explain_broken_link(entry))
        return True

    def _explain_broken_link(self, entry: AuditEntry) -> tuple[ProblemKind, int, str]:
        """Tell a moved entry, a removal with renumbering and a re-hashed change apart."""
        seq = entry.seq
        before = f"entry {seq - 1}" if seq > 1 else "the start of the log"
        others = [other for other in self._find_seqs(entry.prev_hash) if other != seq]
        if others:
            return (
                "reordered",
                seq,
                f"entry {seq} follows entry {others[0]} in the chain instead of {before}: "
                "entries were moved",
            )
        renumbered = self._renumbering_after(seq)
        if renumbered is not None:
            signed_seq, now_seq = renumbered
            return (
                "removed",
                seq,
                f"entries were deleted before entry {seq} and the later ones renumbered "
                f"(the entry signed as {signed_seq} is now numbered {now_seq})",
            )
        if seq == 1:
            return (
                "altered",
                1,
                "entry 1 does not start from the beginning of the log: it was changed and "
                "its hash recomputed, or earlier entries were deleted",
            )
        return (
            "altered",
            seq - 1,
            f"entry {seq - 1} was changed after it was written and its hash recomputed, or "
            f"entries after it were deleted and the rest renumbered: entry {seq} links to a "
            "hash that no entry has",
        )

    def _renumbering_after(self, seq: int) -> tuple[int, int] | None:
        """(signed seq, current seq) when the next valid checkpoint's entry moved down."""
        for checkpoint in self._checkpoints[self._next_checkpoint :]:
            if checkpoint.seq < seq or checkpoint_problem(self._public_key, checkpoint):
                continue
            found = self._find_seqs(checkpoint.entry_hash)
            lower = [other for other in found if other < checkpoint.seq]
            return (checkpoint.seq, lower[-1]) if lower else None
        return None

    def _check_checkpoints_at(self, entry: AuditEntry) -> bool:
        while (
            self._next_checkpoint < len(self._checkpoints)
            and self._checkpoints[self._next_checkpoint].seq <= entry.seq
        ):
            checkpoint = self._checkpoints[self._next_checkpoint]
            reason = checkpoint_problem(self._public_key, checkpoint)
            if reason is not None:
                return self._fail("bad_checkpoint", checkpoint.seq, reason)
            if checkpoint.entry_hash != entry.hash:
                return self._fail(
                    "altered",
                    entry.seq,
                    f"entry {entry.seq} no longer matches the signed checkpoint at seq "
                    f"{entry.seq}: entries after seq {self._last_checkpoint_seq} up to "
                    f"{entry.seq} were rewritten and their hashes recomputed",
                )
            self._checkpoints_checked += 1
            self._last_checkpoint_seq = checkpoint.seq
            self._next_checkpoint += 1
        return True

    def _check_remaining_checkpoints(self) -> None:
        """Checkpoints beyond the last entry prove entries were cut off the end."""
        remaining = self._checkpoints[self._next_checkpoint :]
        if not remaining:
            return
        valid = [c for c in remaining if checkpoint_problem(self._public_key, c) is None]
        if not valid:
            bad = remaining[0]
            reason = checkpoint_problem(self._public_key, bad) or "invalid checkpoint"
            self._fail("bad_checkpoint", bad.seq, reason)
            return
        last = self._expected_seq - 1
        self._fail(
            "truncated",
            self._expected_seq,
            f"entries from seq {self._expected_seq} on were removed: a checkpoint was signed "
            f"at seq {valid[-1].seq} but the log now ends at seq {last}",
        )

    def result(self) -> VerificationResult:
        """Finish (checking checkpoints past the end) and summarise."""
        if self.problem is None and not self._finished:
            self._check_remaining_checkpoints()
        self._finished = True
        return VerificationResult(
            ok=self.problem is None,
            entries_checked=self._entries_checked,
            checkpoints_checked=self._checkpoints_checked,
            last_checkpoint_seq=self._last_checkpoint_seq,
            problem=self.problem,
        )


def verify_chain(
    entries: Sequence[AuditEntry],
    checkpoints: Sequence[Checkpoint],
    public_key: Ed25519PublicKey,
) -> VerificationResult:
    """Verify rows held in memory; the first problem in seq order is reported."""
    ordered = sorted(entries, key=lambda entry: entry.seq)
    index: dict[str, list[int]] = {}

    def find_seqs(hash_value: str) -> Sequence[int]:
        if not index:
            for entry in ordered:
                index.setdefault(entry.hash, []).append(entry.seq)
        return index.get(hash_value, [])

    verifier = ChainVerifier(checkpoints, public_key, find_seqs)
    for entry in ordered:
        if not verifier.feed(entry):
            break
    return verifier.result()
