"""Encrypted, verified backups of the appliance, and their restore onto a fresh install.

What a backup holds (a tar archive, encrypted as a whole, see :mod:`appliance.backup.crypto`):

- ``databases/hygie.db`` and ``databases/audit.db``: consistent snapshots taken with
  SQLite's online backup API while the appliance runs (each still SQLCipher-encrypted);
- ``keys/``: the appliance's secrets (master key, audit and token signing keys, field key,
  sync certificates and tenant key), without which the snapshots cannot be opened; this is
  why the archive itself is encrypted under a key only the pharmacy holds;
- ``documents/``: the documents folder, when there is one;
- ``manifest.json``: SHA-256 of every file and the row count of every table, checked by
  ``verify`` and after ``restore``.

The task queue (``queue.db``) is not saved: it holds ids of pending jobs only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import sqlcipher3

from appliance import __version__
from appliance.backup.crypto import (
    BackupCryptoError,
    KeySource,
    decrypt_chunks,
    new_kdf,
    read_header,
    write_encrypted,
)
from appliance.config import Settings
from appliance.keys import (
    MASTER_KEY,
    SECRET_FACTORIES,
    SecretError,
    load_master_key,
    parse_master_key,
    secret_path,
    write_secret,
)
from appliance.platform import audit_key, domain_key
from appliance.store import StoreError
from appliance.store.sqlcipher import open_connection

BACKUP_KEY = "backup.key"
"""Secret holding the 256-bit key of unattended (scheduled) backups."""
SUFFIX = ".hyb"
PREFIX = "hygie-backup-"
KIT_NAME = "KIT-DE-SECOURS.txt"
DEFAULT_LOG2_N = 17
"""scrypt cost 2^17 (128 MiB, r=8): the OWASP-recommended minimum for scrypt."""


class BackupError(Exception):
    """A backup cannot be written, verified or restored; the message is for the pharmacist."""


@dataclass(frozen=True)
class BackupReport:
    path: Path
    sha256: str
    size: int
    tables: dict[str, dict[str, int]]
    files: int
    kit: Path | None = None
    checked: list[str] = field(default_factory=list)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _database_keys(master: bytes) -> dict[str, bytes]:
    return {"hygie.db": domain_key(master), "audit.db": audit_key(master)}


def table_counts(path: Path, key: bytes) -> dict[str, int]:
    """Row count of every table of an encrypted database (what restore compares)."""
    conn = open_connection(path, key)
    try:
        names = [
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        counts = {}
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            counts[name] = int(conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])  # noqa: S608
        return counts
    finally:
        conn.close()


def _snapshot(source: Path, target: Path, key: bytes, busy_timeout_ms: int) -> None:
    """Copy a live database page by page through SQLite's backup API (consistent)."""
    src = open_connection(source, key, busy_timeout_ms=busy_timeout_ms)
    try:
        dst = open_connection(target, key, busy_timeout_ms=busy_timeout_ms, create=True)
        try:
            src.backup(dst)
            # one self-contained file: no -wal/-shm beside it in the archive
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def _secrets(settings: Settings) -> dict[str, bytes]:
    """Every secret to save: the key directory's files and systemd credentials."""
    found: dict[str, bytes] = {}
    if settings.key_path.is_dir():
        for path in sorted(settings.key_path.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.name != BACKUP_KEY:
                found[path.name] = path.read_bytes()
    for name in SECRET_FACTORIES:
        path = secret_path(settings, name)
        if path.is_file():
            found[name] = path.read_bytes()
    return found


def _stage(settings: Settings, staging: Path) -> dict[str, Any]:
    master = load_master_key(settings)
    manifest: dict[str, Any] = {
        "format": "hygie-backup",
        "version": 1,
        "hygie_version": __version__,
        "created_at": datetime.now(UTC).isoformat(),
        "files": {},
        "tables": {},
    }
    (staging / "databases").mkdir(parents=True)
    sources = {"hygie.db": settings.domain_db_path, "audit.db": settings.audit_db_path}
    for name, key in _database_keys(master).items():
        if not sources[name].exists():
            raise BackupError(f"base {sources[name]} absente : rien à sauvegarder")
        target = staging / "databases" / name
        _snapshot(sources[name], target, key, settings.busy_timeout_ms)
        manifest["tables"][name] = table_counts(target, key)
    keys_dir = staging / "keys"
    keys_dir.mkdir()
    for name, data in _secrets(settings).items():
        (keys_dir / name).write_bytes(data)
    documents = settings.documents_path
    if documents.is_dir():
        shutil.copytree(documents, staging / "documents", symlinks=False)
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        manifest["files"][path.relative_to(staging).as_posix()] = _sha256_file(path)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def create_backup(
    settings: Settings,
    source: KeySource,
    *,
    out_dir: Path | None = None,
    log2_n: int = DEFAULT_LOG2_N,
    write_kit: bool = True,
) -> BackupReport:
    """Snapshot, archive, encrypt, write atomically, then verify by reading it back."""
    target_dir = out_dir or settings.backup_path
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    kdf = new_kdf(source, log2_n)
    key = source.derive(kdf)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = target_dir / f"{PREFIX}{stamp}{SUFFIX}"
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".staging-") as tmp:
        staging = Path(tmp) / "content"
        manifest = _stage(settings, staging)
        tar_path = Path(tmp) / "archive.tar"
        with tarfile.open(tar_path, "w") as archive:
            archive.add(staging, arcname=".")
        partial = final.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, tar_path.open("rb") as plain:
            write_encrypted(
                out,
                plain,
                key,
                {
                    "format": "hygie-backup",
                    "version": 1,
                    "created_at": manifest["created_at"],
                    "kdf": kdf,
                },
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, final)
    report = verify_backup(final, source, deep=False)
    kit = write_emergency_kit(target_dir, report, kdf) if write_kit else None
    return BackupReport(final, report.sha256, report.size, report.tables, report.files, kit)


class _ChunkStream(io.RawIOBase):
    """A readable stream over decrypted chunks, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


@contextmanager
def _opened(path: Path, source: KeySource) -> Iterator[tuple[BinaryIO, dict[str, Any]]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BackupError(f"sauvegarde {path} illisible : {exc}") from exc
    with handle:
        fields, raw = read_header(handle)
        key = source.derive(fields["kdf"])
        chunks = decrypt_chunks(handle, key, raw)
        yield io.BufferedReader(_ChunkStream(chunks), buffer_size=1024 * 1024), fields


def _extract(path: Path, source: KeySource, into: Path) -> dict[str, Any]:
    """Decrypt and unpack into ``into``; check every file against the manifest."""
    with (
        _opened(path, source) as (stream, _fields),
        tarfile.open(fileobj=stream, mode="r|") as archive,
    ):
        archive.extractall(into, filter="data")
    manifest_path = into / "manifest.json"
    if not manifest_path.exists():
        raise BackupError("sauvegarde incomplète : manifeste absent")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    present = {p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    if present != set(manifest["files"]):
        raise BackupError("le contenu de la sauvegarde ne correspond pas à son manifeste")
    for name, expected in manifest["files"].items():
        if _sha256_file(into / name) != expected:
            raise BackupError(f"fichier {name} altéré dans la sauvegarde")
    return manifest


def _check_databases(content: Path, manifest: dict[str, Any]) -> list[str]:
    """Open each database with the saved master key; compare every table's row count."""
    master_file = content / "keys" / MASTER_KEY
    if not master_file.exists():
        raise BackupError("la sauvegarde ne contient pas la clé maîtresse")
    master = parse_master_key(master_file.read_bytes(), "backup")
    checked = []
    for name, key in _database_keys(master).items():
        db_path = content / "databases" / name
        conn = open_connection(db_path, key)
        try:
            if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"base {name} corrompue dans la sauvegarde")
        finally:
            conn.close()
        if table_counts(db_path, key) != manifest["tables"][name]:
            raise BackupError(f"base {name} : les comptes de lignes diffèrent du manifeste")
        checked.append(name)
    return checked


def verify_backup(path: Path, source: KeySource, *, deep: bool = True) -> BackupReport:
    """Decrypt and check a backup: every chunk's tag, every file's hash and, with ``deep``,
    each database's integrity and table counts."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".verify-") as tmp:
        content = Path(tmp)
        try:
            manifest = _extract(path, source, content)
            checked = _check_databases(content, manifest) if deep else []
        except (BackupCryptoError, tarfile.TarError, sqlcipher3.Error, SecretError) as exc:
            raise BackupError(str(exc)) from exc
        return BackupReport(
            path=path,
            sha256=_sha256_file(path),
            size=path.stat().st_size,
            tables=manifest["tables"],
            files=len(manifest["files"]),
            checked=checked,
        )


def restore_backup(
    settings: Settings, path: Path, source: KeySource, *, force: bool = False
) -> BackupReport:
    """Restore onto a fresh install: secrets, databases, documents; then re-check them.

    Refuses to overwrite an existing installation unless ``force`` (a restore must never
    silently replace a pharmacy's live data).
    """
    if not force and installation_in_use(settings):
        raise BackupError(
            f"une installation existe déjà ({settings.data_path}) et contient des données : "
            "restaurez sur une installation neuve, ou ajoutez --force après avoir mis "
            "l'ancienne de côté"
        )
    settings.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=settings.data_path, prefix=".restore-") as tmp:
        content = Path(tmp)
        try:
            manifest = _extract(path, source, content)
            checked = _check_databases(content, manifest)
        except (BackupCryptoError, tarfile.TarError, sqlcipher3.Error, SecretError) as exc:
            raise BackupError(str(exc)) from exc
        for secret in sorted((content / "keys").iterdir()):
            write_secret(settings.key_path / secret.name, secret.read_bytes())
        for name, target in (
            ("hygie.db", settings.domain_db_path),
            ("audit.db", settings.audit_db_path),
        ):
            for suffix in ("-wal", "-shm"):
                Path(str(target) + suffix).unlink(missing_ok=True)
            os.replace(content / "databases" / name, target)
        if (content / "documents").is_dir():
            documents = settings.documents_path
            if documents.exists():
                shutil.rmtree(documents)
            shutil.copytree(content / "documents", documents)
    master = load_master_key(settings)
    for name, key in _database_keys(master).items():
        target = settings.data_path / name
        if table_counts(target, key) != manifest["tables"][name]:
            raise BackupError(f"base {name} restaurée : les comptes de lignes diffèrent")
    return BackupReport(
        path,
        _sha256_file(path),
        path.stat().st_size,
        manifest["tables"],
        len(manifest["files"]),
        checked=checked,
    )


BOOKKEEPING_TABLES = frozenset({"schema_migrations", "worker_heartbeats", "sqlite_sequence"})
FTS_SHADOW_SUFFIXES = ("_config", "_data", "_idx", "_docsize")


def installation_in_use(settings: Settings) -> bool:
    """Whether the databases hold anything beyond what ``install.sh`` creates (migrations,
    heartbeats, full-text index configuration): a fresh install may be restored over."""
    if not settings.domain_db_path.exists() and not settings.audit_db_path.exists():
        return False
    try:
        master = load_master_key(settings)
        keys = _database_keys(master)
        paths = {"hygie.db": settings.domain_db_path, "audit.db": settings.audit_db_path}
        for name, path in paths.items():
            if not path.exists():
                continue
            counts = table_counts(path, keys[name])
            for table, rows in counts.items():
                shadow = table.endswith(FTS_SHADOW_SUFFIXES) and table.rsplit("_", 1)[0] in counts
                if rows and table not in BOOKKEEPING_TABLES and not shadow:
                    return True
    except (SecretError, StoreError, sqlcipher3.Error):
        return True  # unreadable: never overwrite what we cannot inspect
    return False


def scheduled_backups(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{PREFIX}*{SUFFIX}"))


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete the oldest backups beyond ``keep`` (names sort by creation time)."""
    backups = scheduled_backups(directory)
    removed = backups[: max(0, len(backups) - keep)]
    for path in removed:
        path.unlink()
    return removed


def load_backup_key(settings: Settings) -> bytes:
    path = secret_path(settings, BACKUP_KEY)
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except FileNotFoundError as exc:
        raise SecretError(
            f"clé de sauvegarde absente ({path}) : lancez 'hygie backup init-key'"
        ) from exc
    except ValueError as exc:
        raise SecretError(f"clé de sauvegarde illisible ({path})") from exc
    if len(key) != 32:
        raise SecretError(f"clé de sauvegarde invalide ({path}) : 256 bits attendus")
    return key


KIT_TEXT = """KIT DE SECOURS — SAUVEGARDES HYGIE
====================================

Ce document explique comment restaurer l'appareil Hygie de la pharmacie après une panne,
un vol ou un sinistre. Imprimez-le et rangez-le avec la phrase de récupération (ou la
clé de sauvegarde), dans un lieu sûr et séparé de l'appareil (coffre, autre local).

Ni la phrase de récupération ni la clé de sauvegarde ne figurent dans ce document :
sans elles, les sauvegardes sont illisibles, y compris pour le support technique.

Dernière sauvegarde écrite et vérifiée
--------------------------------------
Fichier     : {name}
Date (UTC)  : {created}
Taille      : {size} octets
Empreinte   : SHA-256 {sha256}
Protection  : {protection}
Contenu     : bases de données chiffrées (dossiers patients, BPM, journal d'audit),
              clés de l'appareil, dossier des documents ({files} fichiers au total).

Où sont les sauvegardes
-----------------------
Dossier : {directory}
Copiez régulièrement ce dossier sur un support externe (disque USB rangé hors de la
pharmacie). Les fichiers sont chiffrés (AES-256-GCM) : leur copie ne révèle rien.

Restaurer sur un appareil neuf
------------------------------
1. Installez Hygie sur l'appareil neuf (script install.sh) ; n'y saisissez rien avant
   la restauration.
2. Copiez le fichier de sauvegarde sur l'appareil.
3. Vérifiez d'abord la sauvegarde :
       hygie backup verify {name} {option}
4. Restaurez-la :
       hygie backup restore {name} {option}
   La commande refuse d'écraser une installation qui contient déjà des données.
5. Appliquez les migrations éventuelles puis redémarrez :
       hygie db migrate
       systemctl restart hygie
6. Contrôlez le journal d'audit : hygie audit verify

En cas de doute, n'effacez jamais l'ancien appareil ni les sauvegardes : appelez le support.
"""


def write_emergency_kit(directory: Path, report: BackupReport, kdf: dict[str, Any]) -> Path:
    """(Re)write the French emergency kit next to the backups."""
    if kdf["name"] == "scrypt":
        protection = "phrase de récupération (scrypt, N=2^{}, r={}, p={})".format(
            kdf["log2_n"], kdf["r"], kdf["p"]
        )
        option = "--passphrase-file FICHIER   (ou saisie de la phrase à l'invite)"
    else:
        protection = "fichier de clé de sauvegarde (backup.key, 256 bits)"
        option = "--key-file backup.key"
    text = KIT_TEXT.format(
        name=report.path.name,
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        size=report.size,
        sha256=report.sha256,
        protection=protection,
        files=report.files,
        directory=directory,
        option=option,
    )
    kit = directory / KIT_NAME
    kit.write_text(text, encoding="utf-8")
    return kit
