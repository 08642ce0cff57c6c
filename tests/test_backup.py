"""Backups: create (live snapshot, encrypted, verified), verify, restore onto a fresh install
and compare every table; wrong passphrase, tampering and truncation are refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.audit import AuditEvent
from appliance.backup import (
    KeySource,
    create_backup,
    prune,
    run_scheduled_backup,
    verify_backup,
)
from appliance.backup.core import BackupError, scheduled_backups
from appliance.cli import main
from appliance.config import Settings, load_settings
from appliance.keys import load_master_key
from appliance.outbox import enqueue
from appliance.platform import Platform, audit_key, domain_key
from appliance.store.sqlcipher import open_connection

PASSPHRASE = "cheval agrafe batterie correcte"


@pytest.fixture
def cheap_kdf(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.setenv("HYGIE_BACKUP_KDF_LOG2_N", "10")


def _populate(platform: Platform, settings: Settings) -> None:
    with platform.store.write() as db:
        for i in range(50):
            enqueue(
                db,
                stream="patients",
                kind="patient.version",
                payload={"i": i},
                idempotency_key=f"p-{i}",
            )
    for i in range(5):
        platform.audit.record(
            AuditEvent(
                actor="user:3f2a9c",
                role="pharmacien_titulaire",
                action="read",
                object_type="patient",
                object_id=f"pat_{i:06d}",
                purpose="care",
                client_addr="192.168.1.20",
                outcome="success",
                request_id=f"r-{i}",
            )
        )
    platform.audit.checkpoint()
    documents = settings.documents_path
    (documents / "2026").mkdir(parents=True)
    (documents / "2026" / "bilan.pdf").write_bytes(b"%PDF-1.7 test document\n")


def _dump(path: Path, key: bytes) -> dict[str, list[tuple[object, ...]]]:
    conn = open_connection(path, key)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables
        }
    finally:
        conn.close()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "phrase.txt"
    path.write_text(text + "\n")
    return path


def test_backup_restores_into_a_fresh_directory_with_every_table_equal(
    cheap_kdf: None, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    _populate(platform, settings)
    phrase = _write(tmp_path, PASSPHRASE)
    runner = CliRunner()
    created = runner.invoke(main, ["backup", "create", "--passphrase-file", str(phrase)])
    assert created.exit_code == 0, created.output
    assert "vérifiée" in created.output
    backup_file = next(settings.backup_path.glob("hygie-backup-*.hyb"))
    kit = (settings.backup_path / "KIT-DE-SECOURS.txt").read_text()
    assert "hygie backup restore" in kit
    assert backup_file.name in kit
    assert PASSPHRASE not in kit
    assert b"patient.version" not in backup_file.read_bytes()

    verified = runner.invoke(
        main, ["backup", "verify", str(backup_file), "--passphrase-file", str(phrase)]
    )
    assert verified.exit_code == 0, verified.output

    # A fresh install as install.sh leaves it: its own new keys, migrated empty databases.
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("HYGIE_DATA_DIR", str(fresh / "data"))
    monkeypatch.setenv("HYGIE_KEY_DIR", str(fresh / "keys"))
    for command in (["keys", "init"], ["db", "migrate"]):
        assert runner.invoke(main, command).exit_code == 0
    restored = runner.invoke(
        main, ["backup", "restore", str(backup_file), "--passphrase-file", str(phrase)]
    )
    assert restored.exit_code == 0, restored.output
    fresh_settings = load_settings()
    master = load_master_key(fresh_settings)
    assert master == load_master_key(settings)
    for original, copy, key in (
        (settings.domain_db_path, fresh_settings.domain_db_path, domain_key(master)),
        (settings.audit_db_path, fresh_settings.audit_db_path, audit_key(master)),
    ):
        before, after = _dump(original, key), _dump(copy, key)
        assert before.keys() == after.keys()
        assert "sync_outbox" in before or "audit_entries" in before
        for table in before:
            assert before[table] == after[table], table
    assert (fresh_settings.documents_path / "2026" / "bilan.pdf").read_bytes().startswith(b"%PDF")
    audit = runner.invoke(main, ["audit", "verify"])
    assert audit.exit_code == 0, audit.output
    # Restoring again over the now existing install is refused.
    again = runner.invoke(
        main, ["backup", "restore", str(backup_file), "--passphrase-file", str(phrase)]
    )
    assert again.exit_code != 0
    assert "existe déjà" in again.output


def test_wrong_passphrase_tampering_and_truncation_are_refused(
    cheap_kdf: None, platform: Platform, tmp_path: Path
) -> None:
    settings = load_settings()
    report = create_backup(settings, KeySource(passphrase=PASSPHRASE), log2_n=10, write_kit=False)
    runner = CliRunner()
    wrong = _write(tmp_path, "une autre phrase bien longue")
    result = runner.invoke(
        main, ["backup", "verify", str(report.path), "--passphrase-file", str(wrong)]
    )
    assert result.exit_code != 0
    assert "phrase ou clé incorrecte" in result.output
    data = bytearray(report.path.read_bytes())
    tampered = tmp_path / "tampered.hyb"
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="endommag"):
        verify_backup(tampered, KeySource(passphrase=PASSPHRASE))
    truncated = tmp_path / "truncated.hyb"
    truncated.write_bytes(report.path.read_bytes()[:-100])
    with pytest.raises(BackupError):
        verify_backup(truncated, KeySource(passphrase=PASSPHRASE))
    with pytest.raises(ValueError, match="au moins"):
        create_backup(settings, KeySource(passphrase="court"), log2_n=10)


def test_scheduled_backup_with_key_file_and_retention(cheap_kdf: None, platform: Platform) -> None:
    settings = load_settings()
    # No key file yet: the scheduled backup is skipped, never half-done.
    assert run_scheduled_backup(settings, datetime(2026, 11, 25, 3, 0, tzinfo=UTC)) is None
    result = CliRunner().invoke(main, ["backup", "init-key"])
    assert result.exit_code == 0, result.output
    report = run_scheduled_backup(settings, datetime(2026, 11, 25, 3, 0, tzinfo=UTC))
    assert report is not None
    assert report.files >= 3
    # Not due again the same day.
    assert run_scheduled_backup(settings, datetime(2026, 11, 25, 4, 0, tzinfo=UTC)) is None
    key = bytes.fromhex((settings.key_path / "backup.key").read_text().strip())
    for _ in range(3):
        create_backup(settings, KeySource(key=key), write_kit=False)
    assert len(scheduled_backups(settings.backup_path)) == 4
    removed = prune(settings.backup_path, 2)
    assert len(removed) == 2
    assert scheduled_backups(settings.backup_path)[-1].exists()
    assert len(scheduled_backups(settings.backup_path)) == 2


def test_backup_while_the_counter_keeps_writing(cheap_kdf: None, platform: Platform) -> None:
    """The snapshot is taken live: writes go on during it and the backup is consistent."""
    import threading

    settings = load_settings()
    stop = threading.Event()
    written: list[int] = []

    def counter() -> None:
        i = 0
        while not stop.is_set():
            with platform.store.write() as db:
                enqueue(db, stream="s", kind="k", payload={"i": i}, idempotency_key=f"w-{i}")
            written.append(i)
            i += 1

    thread = threading.Thread(target=counter)
    thread.start()
    try:
        report = create_backup(
            settings, KeySource(passphrase=PASSPHRASE), log2_n=10, write_kit=False
        )
    finally:
        stop.set()
        thread.join()
    deep = verify_backup(report.path, KeySource(passphrase=PASSPHRASE))
    assert deep.checked == ["hygie.db", "audit.db"]
    assert 0 <= deep.tables["hygie.db"]["sync_outbox"] <= len(written)
