"""Cloud storage of sync batches and per-tenant feeds in MongoDB (pymongo).

Durability: every write goes through collections bound to write concern ``majority`` with
``j=True``, and the HTTP acknowledgement is sent only after they return, so an acknowledged
batch survives the loss of the primary. Reads use ``majority`` read concern so an appliance
never sees a feed item that a failover could roll back.

Idempotency: events are upserted with ``$setOnInsert`` under the unique index (tenant,
idempotency_key); a second delivery matches the stored document and changes nothing. A
different content under the same key, or another key under a stored sequence, is refused.

Scale: one replica set serves many pharmacies; when it outgrows one, every collection is
sharded on ``{tenant: 1}`` (:data:`SHARD_KEYS`): a pharmacy's data stays on one shard (its
feed and ordering queries are single-shard), and the unique indexes all start with the shard
key, which MongoDB requires of unique indexes on a sharded collection.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pymongo
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from sync.envelope import RELAY_KIND, RELAY_STREAM, Ack, Batch, FeedItem, WireEntry

EVENTS = "events"
DELIVERIES = "deliveries"
TENANTS = "tenants"
FEED = "feed"
RELAY = "relay"
INCIDENTS = "incidents"

DURABLE = WriteConcern(w="majority", j=True)
MAJORITY_READ = ReadConcern("majority")

INDEXES: dict[str, list[IndexModel]] = {
    EVENTS: [
        IndexModel(
            [("tenant", ASCENDING), ("idempotency_key", ASCENDING)],
            unique=True,
            name="tenant_idempotency_key",
        ),
        IndexModel([("tenant", ASCENDING), ("seq", ASCENDING)], unique=True, name="tenant_seq"),
        IndexModel(
            [("tenant", ASCENDING), ("stream", ASCENDING), ("seq", ASCENDING)],
            name="tenant_stream_seq",
        ),
    ],
    DELIVERIES: [
        IndexModel(
            [("tenant", ASCENDING), ("delivery_id", ASCENDING)], unique=True, name="tenant_delivery"
        ),
    ],
    FEED: [
        IndexModel(
            [("tenant", ASCENDING), ("position", ASCENDING)], unique=True, name="tenant_position"
        ),
        IndexModel(
            [("tenant", ASCENDING), ("remote_id", ASCENDING)], unique=True, name="tenant_remote_id"
        ),
    ],
    RELAY: [
        IndexModel(
            [("tenant", ASCENDING), ("idempotency_key", ASCENDING)], unique=True, name="tenant_lot"
        ),
        IndexModel([("state", ASCENDING), ("tenant", ASCENDING)], name="state_tenant"),
    ],
    INCIDENTS: [IndexModel([("tenant", ASCENDING), ("at", ASCENDING)], name="tenant_at")],
}

SHARD_KEYS: dict[str, dict[str, int]] = {
    name: {"tenant": 1} for name in (EVENTS, DELIVERIES, FEED, RELAY, INCIDENTS)
}
"""Shard key per collection (``tenants`` is keyed by ``_id`` = tenant and stays unsharded
or is sharded on ``_id``)."""


class Conflict(Exception):
    """A delivery contradicts what is stored (replay of a request, forged or corrupt entry)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class CloudStore:
    """The cloud's MongoDB database, every collection durable (majority, journaled)."""

    client: pymongo.MongoClient[dict[str, Any]]
    db: Database[dict[str, Any]]
    write_mode: str = "upsert"
    """``upsert``: bulk ``$setOnInsert`` upserts keyed by (tenant, idempotency key);
    ``insert``: ``insert_many`` of the entries not yet stored, a unique-index violation then
    resolved as a duplicate or a conflict. Same exactly-once result; ``insert`` is the faster
    on SecantusDB (see benchmarks/RESULTS.md)."""

    @classmethod
    def connect(
        cls, uri: str, database: str, *, timeout_ms: int = 5000, write_mode: str = "upsert"
    ) -> CloudStore:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            retryWrites=True,
            tz_aware=True,
        )
        db = client.get_database(database, write_concern=DURABLE, read_concern=MAJORITY_READ)
        return cls(client, db, write_mode)

    def col(self, name: str) -> Collection[dict[str, Any]]:
        return self.db.get_collection(name)

    def ensure_indexes(self) -> None:
        for name, models in INDEXES.items():
            self.col(name).create_indexes(models)

    def shard(self) -> list[dict[str, Any]]:
        """Shard every tenant-keyed collection (run once against a ``mongos``)."""
        admin = self.client.admin
        results = [admin.command("enableSharding", self.db.name)]
        for name, key in SHARD_KEYS.items():
            results.append(admin.command("shardCollection", f"{self.db.name}.{name}", key=key))
        return results

    def close(self) -> None:
        self.client.close()

    # --- pushes --------------------------------------------------------------------------

    def record_incident(self, tenant: str, kind: str, detail: str) -> None:
        self.col(INCIDENTS).insert_one(
            {"tenant": tenant, "kind": kind, "detail": detail[:500], "at": _now()}
        )

    def incidents(self, tenant: str) -> list[dict[str, Any]]:
        return list(self.col(INCIDENTS).find({"tenant": tenant}, {"_id": 0}).sort("at", 1))

    def store_batch(self, batch: Batch) -> Ack:
        """Store a (checked) batch idempotently; raise :class:`Conflict` on a contradiction."""
        tenant = batch.tenant
        try:
            self.col(DELIVERIES).insert_one(
                {
                    "tenant": tenant,
                    "delivery_id": batch.delivery_id,
                    "first_seq": batch.first_seq,
                    "last_seq": batch.last_seq,
                    "at": _now(),
                }
            )
        except DuplicateKeyError as exc:
            raise Conflict(f"delivery {batch.delivery_id} was already received: replay") from exc
        keys = [e.idempotency_key for e in batch.entries]
        stored = {
            doc["idempotency_key"]: doc
            for doc in self.col(EVENTS).find(
                {"tenant": tenant, "idempotency_key": {"$in": keys}},
                {"idempotency_key": 1, "content_hash": 1, "seq": 1},
            )
        }
        fresh: list[WireEntry] = []
        for entry in batch.entries:
            known = stored.get(entry.idempotency_key)
            if known is None:
                fresh.append(entry)
            elif known["content_hash"] != entry.content_hash or known["seq"] != entry.seq:
                raise Conflict(
                    f"entry {entry.seq} re-uses idempotency key of stored sequence "
                    f"{known['seq']} with different content"
                )
        received = _now()
        duplicates_raced = 0
        if fresh:
            try:
                if self.write_mode == "upsert":
                    self.col(EVENTS).bulk_write(
                        [
                            pymongo.UpdateOne(
                                {"tenant": tenant, "idempotency_key": entry.idempotency_key},
                                {"$setOnInsert": self._event_doc(tenant, entry, received)},
                                upsert=True,
                            )
                            for entry in fresh
                        ],
                        ordered=True,
                    )
                else:
                    self.col(EVENTS).insert_many(
                        [self._event_doc(tenant, entry, received) for entry in fresh],
                        ordered=False,
                    )
            except BulkWriteError as exc:
                duplicates_raced = self._resolve_duplicates(tenant, fresh, exc)
        stored_now = len(fresh) - duplicates_raced
        relays = [e for e in batch.entries if e.stream == RELAY_STREAM and e.kind == RELAY_KIND]
        for entry in relays:
            self.col(RELAY).update_one(
                {"tenant": tenant, "idempotency_key": entry.idempotency_key},
                {
                    "$setOnInsert": {
                        "state": "pending",
                        "seq": entry.seq,
                        "attempts": 0,
                        "at": received,
                    }
                },
                upsert=True,
            )
        self.col(TENANTS).update_one(
            {"_id": tenant},
            {"$max": {"acked_through": batch.last_seq}, "$set": {"last_push_at": received}},
            upsert=True,
        )
        return Ack(
            tenant=tenant,
            acked_through=batch.last_seq,
            stored=stored_now,
            duplicates=len(batch.entries) - stored_now,
            relayed=len(relays),
        )

    def _resolve_duplicates(self, tenant: str, fresh: list[WireEntry], exc: BulkWriteError) -> int:
        """Entries another delivery stored meanwhile are duplicates if identical; any other
        unique-index violation (a sequence under another key) is a conflict."""
        errors = exc.details.get("writeErrors", [])
        if not errors or any(e.get("code") != 11000 for e in errors):
            raise exc
        by_key = {e.idempotency_key: e for e in fresh}
        raced = 0
        for error in errors:
            entry = fresh[int(error["index"])]
            known = self.col(EVENTS).find_one(
                {"tenant": tenant, "idempotency_key": entry.idempotency_key}
            )
            if known is None or known["content_hash"] != by_key[entry.idempotency_key].content_hash:
                raise Conflict(
                    "a sequence number is already stored under another idempotency key"
                ) from exc
            raced += 1
        return raced

    @staticmethod
    def _event_doc(tenant: str, entry: WireEntry, received: dt.datetime) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "seq": entry.seq,
            "stream": entry.stream,
            "kind": entry.kind,
            "idempotency_key": entry.idempotency_key,
            "created_at": entry.created_at,
            "received_at": received,
            "nonce": entry.nonce,
            "ciphertext": entry.ciphertext,
            "wrapped_key": entry.wrapped_key,
            "key_id": entry.key_id,
            "content_hash": entry.content_hash,
            "gateway_key": entry.gateway_key,
        }

    def events(self, tenant: str, stream: str | None = None) -> list[WireEntry]:
        """A tenant's stored events in sequence order (restore, audits, tests)."""
        query: dict[str, Any] = {"tenant": tenant}
        if stream is not None:
            query["stream"] = stream
        return [self._wire(doc) for doc in self.col(EVENTS).find(query).sort("seq", 1)]

    @staticmethod
    def _wire(doc: dict[str, Any]) -> WireEntry:
        return WireEntry(
            seq=doc["seq"],
            stream=doc["stream"],
            kind=doc["kind"],
            idempotency_key=doc["idempotency_key"],
            created_at=doc["created_at"],
            nonce=doc["nonce"],
            ciphertext=doc["ciphertext"],
            wrapped_key=doc["wrapped_key"],
            key_id=doc["key_id"],
            content_hash=doc["content_hash"],
            gateway_key=doc.get("gateway_key"),
        )

    def event(self, tenant: str, idempotency_key: str) -> WireEntry | None:
        doc = self.col(EVENTS).find_one({"tenant": tenant, "idempotency_key": idempotency_key})
        return None if doc is None else self._wire(doc)

    # --- feeds ---------------------------------------------------------------------------

    def append_feed(
        self, tenant: str, remote_id: str, stream: str, kind: str, payload: dict[str, Any]
    ) -> int:
        """Append to a tenant's feed once per ``remote_id``; return its position.

        The position counter and the item are written in one transaction, so positions
        become visible in order and a reader's ``after`` cursor never skips an item.
        """
        existing = self.col(FEED).find_one({"tenant": tenant, "remote_id": remote_id})
        if existing is not None:
            return int(existing["position"])

        def append(session: Any) -> int:
            counter = self.col(TENANTS).find_one_and_update(
                {"_id": tenant},
                {"$inc": {"feed_position": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            assert counter is not None, "an upsert with return_document=AFTER returns the doc"
            position = int(counter["feed_position"])
            self.col(FEED).insert_one(
                {
                    "tenant": tenant,
                    "position": position,
                    "remote_id": remote_id,
                    "stream": stream,
                    "kind": kind,
                    "payload": payload,
                    "created_at": _now(),
                },
                session=session,
            )
            return position

        with self.client.start_session() as session:
            try:
                return int(session.with_transaction(append, write_concern=DURABLE))
            except DuplicateKeyError:
                found = self.col(FEED).find_one({"tenant": tenant, "remote_id": remote_id})
                if found is None:
                    raise
                return int(found["position"])

    def feed(self, tenant: str, after: int, limit: int) -> list[FeedItem]:
        docs = (
            self.col(FEED)
            .find({"tenant": tenant, "position": {"$gt": after}})
            .sort("position", 1)
            .limit(limit)
        )
        return [
            FeedItem(
                position=int(doc["position"]),
                remote_id=str(doc["remote_id"]),
                stream=str(doc["stream"]),
                kind=str(doc["kind"]),
                payload=dict(doc["payload"]),
                created_at=doc["created_at"].isoformat(),
            )
            for doc in docs
        ]

    def acked_through(self, tenant: str) -> int:
        doc = self.col(TENANTS).find_one({"_id": tenant})
        return int(doc.get("acked_through", 0)) if doc else 0

    # --- relay ---------------------------------------------------------------------------

    def pending_relays(self, limit: int = 100) -> Iterable[dict[str, Any]]:
        return list(self.col(RELAY).find({"state": "pending"}).sort("at", 1).limit(limit))

    def finish_relay(self, relay_id: Any, state: str) -> None:
        self.col(RELAY).update_one({"_id": relay_id}, {"$set": {"state": state, "done_at": _now()}})

    def count_relay_attempt(self, relay_id: Any, error: str) -> None:
        self.col(RELAY).update_one(
            {"_id": relay_id}, {"$inc": {"attempts": 1}, "$set": {"last_error": error[:300]}}
        )
