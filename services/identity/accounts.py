"""Accounts: creating and changing users, checking passwords and PINs with lockout.

Every change of a user appends a version (who, when); every login, failure, lockout, role
change and session revocation is written to the audit log with ids and codes only.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Literal

import msgspec
import sqlite_utils

from appliance.audit import AuditEvent, AuditLog
from appliance.config import Settings
from appliance.problems import Problem
from appliance.security.revocation import revoke_subject, revoke_token
from appliance.store import Store, Versioned
from services.identity import logic
from services.identity import store as repo
from services.identity.models import User, UserCreate, UserUpdate
from services.identity.passwords import Hasher
from services.identity.roles import ROLES, Role

UNKNOWN = "unknown"


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who acts, with which scopes, from where: what checks and audit entries need."""

    actor: str
    role: str
    scopes: frozenset[str] = frozenset()
    client_addr: str = "unknown"
    request_id: str = ""
    token_id: str = ""
    """``jti`` of the caller's access token, when there is one."""

    def event(
        self,
        action: str,
        object_type: str,
        object_id: str,
        *,
        purpose: str,
        outcome: str = "success",
        actor: str | None = None,
        role: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            actor=actor or self.actor,
            role=role or self.role or "none",
            action=action,
            object_type=object_type,
            object_id=object_id,
            purpose=purpose,
            client_addr=self.client_addr,
            outcome=outcome,
            request_id=self.request_id,
        )


CLI_ACTOR = Actor(
    actor="cli", role="root", scopes=frozenset({"admin:*", "staff:*"}), client_addr="local"
)
"""Root on the box (``hygie users ...``): may manage every account."""


class LoginResult(msgspec.Struct, frozen=True, kw_only=True):
    outcome: Literal["success", "failure", "locked", "suspended", "unavailable"]
    user: User | None = None
    retry_after_s: int = 0


def new_user_id() -> str:
    return f"u-{secrets.token_hex(8)}"


class Accounts:
    """Users, their secrets and their failed attempts, on the domain store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.clock = clock
        self.hasher = Hasher.from_settings(settings)
        self.account_policy = logic.LockoutPolicy(
            threshold=settings.lockout_threshold,
            base_delay_s=settings.lockout_base_delay_s,
            max_delay_s=settings.lockout_max_delay_s,
            reset_after_s=settings.lockout_reset_after_s,
        )
        self.address_policy = logic.LockoutPolicy(
            threshold=settings.lockout_address_threshold,
            base_delay_s=settings.lockout_base_delay_s,
            max_delay_s=settings.lockout_max_delay_s,
            reset_after_s=settings.lockout_reset_after_s,
        )

    # --- reading ------------------------------------------------------------------------------

    def get(self, user_id: str) -> Versioned[User]:
        item = repo.get_user(self.store.db, user_id)
        if item is None:
            raise Problem(404, "not-found", f"no user '{user_id}'")
        return item

    def by_username(self, username: str) -> Versioned[User] | None:
        return repo.find_user(self.store.db, username=username)

    def has_pin(self, user_id: str) -> bool:
        return repo.credentials(self.store.db, user_id)[1] is not None

    def locked_for(self, user_id: str) -> int:
        state = repo.failure_state(self.store.db, f"user:{user_id}")
        return int(logic.locked_for(state, self.clock()) + 0.999)

    # --- administration -----------------------------------------------------------------------

    def _check_manage(self, actor: Actor, role: Role) -> None:
        if not logic.may_manage(actor.scopes, role):
            need = "staff:manage" if ROLES[role].patient_data else "admin:users"
            raise Problem(
                403,
                "forbidden-role",
                f"managing accounts of role '{role.value}' needs the scope '{need}'",
            )

    def _check_password(self, password: str, username: str, display_name: str) -> None:
        problems = logic.password_problems(
            password,
            min_length=self.settings.password_min_length,
            username=username,
            display_name=display_name,
        )
        if problems:
            raise Problem(
                400,
                "weak-password",
                "the password does not follow the policy: " + "; ".join(problems),
                extra={"rules": problems},
            )

    def _check_profile(self, role: Role, rpps: str | None) -> None:
        problem = logic.rpps_problem(role, rpps)
        if problem:
            raise Problem(400, "invalid-rpps", problem)

    def create(self, body: UserCreate, actor: Actor) -> Versioned[User]:
        self._check_manage(actor, body.role)
        self._check_profile(body.role, body.rpps)
        self._check_password(body.password, body.username, body.display_name)
        hashed = self.hasher.hash(body.password)
        user = User(
            user_id=new_user_id(),
            username=body.username,
            display_name=body.display_name.strip(),
            role=body.role,
            rpps=body.rpps,
        )
        with self.store.write() as db:
            if repo.find_user(db, username=body.username) is not None:
                raise Problem(409, "username-taken", f"the login '{body.username}' is taken")
            if body.rpps and repo.find_user(db, rpps=body.rpps) is not None:
                raise Problem(409, "rpps-taken", "another account has this RPPS number")
            saved = repo.save_user(db, user, actor=actor.actor, expected_version=0)
            repo.set_password_hash(db, user.user_id, hashed, self.clock())
        self.audit.record(actor.event("user_create", "user", user.user_id, purpose="admin"))
        self.audit.record(
            actor.event("role_change", "user", user.user_id, purpose="admin", outcome=user.role)
        )
        return saved

    def update(self, user_id: str, body: UserUpdate, actor: Actor) -> Versioned[User]:
        current = self.get(user_id)
        old = current.entity
        self._check_manage(actor, old.role)
        if body.role != old.role:
            self._check_manage(actor, body.role)
        if user_id == actor.actor and (body.role != old.role or body.status != old.status):
            raise Problem(409, "own-account", "you cannot change your own role or status")
        self._check_profile(body.role, body.rpps)
        user = msgspec.structs.replace(
            old,
            display_name=body.display_name.strip(),
            role=body.role,
            rpps=body.rpps,
            status=body.status,
        )
        now = self.clock()
        with self.store.write() as db:
            if body.rpps and body.rpps != old.rpps:
                other = repo.find_user(db, rpps=body.rpps)
                if other is not None and other.entity_id != user_id:
                    raise Problem(409, "rpps-taken", "another account has this RPPS number")
            saved = repo.save_user(
                db, user, actor=actor.actor, expected_version=body.expected_version
            )
            if body.role != old.role or body.status != old.status:
                self._revoke_all(db, user_id, now, "account_changed")
        self.audit.record(actor.event("user_update", "user", user_id, purpose="admin"))
        if body.role != old.role:
            self.audit.record(
                actor.event("role_change", "user", user_id, purpose="admin", outcome=body.role)
            )
        if body.status != old.status:
            action = "user_suspend" if body.status == "suspended" else "user_activate"
            self.audit.record(actor.event(action, "user", user_id, purpose="admin"))
        return saved

    def reset_password(self, user_id: str, password: str, actor: Actor) -> None:
        user = self.get(user_id).entity
        self._check_manage(actor, user.role)
        self._check_password(password, user.username, user.display_name)
        hashed = self.hasher.hash(password)
        now = self.clock()
        with self.store.write() as db:
            repo.set_password_hash(db, user_id, hashed, now)
            repo.clear_failures(db, f"user:{user_id}")
            repo.forget_terminal_logins(db, user_id)
            self._revoke_all(db, user_id, now, "password_reset")
        self.audit.record(actor.event("password_reset", "user", user_id, purpose="admin"))

    def unlock(self, user_id: str, actor: Actor) -> None:
        self.get(user_id)
        with self.store.write() as db:
            repo.clear_failures(db, f"user:{user_id}")
            repo.clear_failures(db, f"pin:{user_id}")
        self.audit.record(actor.event("unlock", "user", user_id, purpose="admin"))

    def revoke_sessions(self, user_id: str, actor: Actor) -> int:
        """Revoke every refresh-token family and access token of a user now."""
        self.get(user_id)
        with self.store.write() as db:
            count = self._revoke_all(db, user_id, self.clock(), "admin_revoked")
        self.audit.record(actor.event("token_revoke", "user", user_id, purpose="admin"))
        return count

    def _revoke_all(self, db: sqlite_utils.Database, user_id: str, now: float, reason: str) -> int:
        count = 0
        for family in repo.live_families(db, user_id, now):
            count += revoke_family_tokens(db, family.family_id, now, reason)
        revoke_subject(db, user_id, int(now))
        return count

    # --- self service -------------------------------------------------------------------------

    def change_password(self, user_id: str, current: str, new: str, actor: Actor) -> None:
        user = self.get(user_id).entity
        stored, _ = repo.credentials(self.store.db, user_id)
        if not self.hasher.verify(stored, current):
            self.audit.record(
                actor.event("password_change", "user", user_id, purpose="self", outcome="failure")
            )
            raise Problem(403, "wrong-password", "the current password is wrong")
        self._check_password(new, user.username, user.display_name)
        now = self.clock()
        with self.store.write() as db:
            repo.set_password_hash(db, user_id, self.hasher.hash(new), now)
            keep = repo.access_token_family(db, actor.token_id) if actor.token_id else None
            for family in repo.live_families(db, user_id, now):
                if family.family_id != keep:  # the other sessions end, this one goes on
                    revoke_family_tokens(db, family.family_id, now, "password_changed")
        self.audit.record(actor.event("password_change", "user", user_id, purpose="self"))

    def set_pin(self, user_id: str, current_password: str, pin: str, actor: Actor) -> None:
        self.get(user_id)
        stored, _ = repo.credentials(self.store.db, user_id)
        if not self.hasher.verify(stored, current_password):
            self.audit.record(
                actor.event("pin_change", "user", user_id, purpose="self", outcome="failure")
            )
            raise Problem(403, "wrong-password", "the current password is wrong")
        problems = logic.pin_problems(pin)
        if problems:
            raise Problem(400, "weak-pin", "the PIN does not follow the policy: " + problems[0])
        with self.store.write() as db:
            repo.set_pin_hash(db, user_id, self.hasher.hash(pin), self.clock())
            repo.clear_failures(db, f"pin:{user_id}")
        self.audit.record(actor.event("pin_change", "user", user_id, purpose="self"))

    # --- authentication -----------------------------------------------------------------------

    def _lock_keys(self, user: Versioned[User] | None, username: str, addr: str) -> list[str]:
        account = f"user:{user.entity_id}" if user else f"name:{repo.digest(username)[:32]}"
        return [account, f"addr:{addr}"]

    def _wait(self, keys: list[str], now: float) -> float:
        db = self.store.db
        waits = [
            logic.locked_for(
                logic.current_state(repo.failure_state(db, key), now, self._policy(key)), now
            )
            for key in keys
        ]
        return max(waits)

    def _policy(self, key: str) -> logic.LockoutPolicy:
        return self.address_policy if key.startswith("addr:") else self.account_policy

    def _fail(self, keys: list[str], now: float, actor: Actor, object_id: str) -> float:
        """Count one failure on every key; audit a lockout when one starts; the wait."""
        wait = 0.0
        with self.store.write() as db:
            for key in keys:
                policy = self._policy(key)
                before = logic.current_state(repo.failure_state(db, key), now, policy)
                after = logic.after_failure(before, now, policy)
                repo.put_failure_state(db, key, after)
                if after.locked_until > max(now, before.locked_until):
                    self.audit.record(
                        actor.event(
                            "lockout",
                            "address" if key.startswith("addr:") else "user",
                            actor.client_addr if key.startswith("addr:") else object_id,
                            purpose="authentication",
                            outcome=f"{int(after.locked_until - now)}s",
                        )
                    )
                wait = max(wait, logic.locked_for(after, now))
        return wait

    def login_password(self, username: str, password: str, actor: Actor) -> LoginResult:
        """Check a password with per-account and per-address lockout."""
        now = self.clock()
        user = self.by_username(username)
        object_id = user.entity_id if user else UNKNOWN
        keys = self._lock_keys(user, username, actor.client_addr)
        wait = self._wait(keys, now)
        if wait > 0:
            self.audit.record(
                actor.event("login", "user", object_id, purpose="authentication", outcome="locked")
            )
            return LoginResult(outcome="locked", retry_after_s=int(wait + 0.999))
        stored = repo.credentials(self.store.db, user.entity_id)[0] if user else None
        if user is None or not self.hasher.verify(stored, password):
            self.audit.record(
                actor.event("login", "user", object_id, purpose="authentication", outcome="failure")
            )
            wait = self._fail(keys, now, actor, object_id)
            return LoginResult(outcome="failure", retry_after_s=int(wait + 0.999))
        return self._succeed(user, keys[0], actor, "pwd", stored, password)

    def _succeed(
        self,
        user: Versioned[User],
        key: str,
        actor: Actor,
        method: str,
        stored: str | None = None,
        password: str | None = None,
    ) -> LoginResult:
        entity = user.entity
        if entity.status != "active":
            self.audit.record(
                actor.event(
                    "login",
                    "user",
                    entity.user_id,
                    purpose="authentication",
                    outcome="suspended",
                    actor=entity.user_id,
                    role=entity.role,
                )
            )
            return LoginResult(outcome="suspended")
        with self.store.write() as db:
            repo.clear_failures(db, key)
            if method == "pwd":
                repo.clear_failures(db, f"pin:{entity.user_id}")
            if stored and password and self.hasher.needs_rehash(stored):
                repo.set_password_hash(db, entity.user_id, self.hasher.hash(password), self.clock())
        self.audit.record(
            actor.event(
                "login",
                "user",
                entity.user_id,
                purpose="authentication",
                outcome=f"success:{method}",
                actor=entity.user_id,
                role=entity.role,
            )
        )
        return LoginResult(outcome="success", user=entity)

    def login_pin(self, user_id: str, pin: str, terminal_hash: str, actor: Actor) -> LoginResult:
        """PIN re-authentication of a user who logged in fully on this terminal today."""
        now = self.clock()
        user = repo.get_user(self.store.db, user_id)
        logins = repo.terminal_logins(self.store.db, terminal_hash)
        last = logins.get(user_id)
        if (
            user is None
            or last is None
            or not logic.same_local_day(last, now, self.settings.timezone)
        ):
            return LoginResult(outcome="unavailable")
        addr_key = f"addr:{actor.client_addr}"
        wait = self._wait([addr_key], now)
        if wait > 0:
            self.audit.record(
                actor.event("login", "user", user_id, purpose="authentication", outcome="locked")
            )
            return LoginResult(outcome="locked", retry_after_s=int(wait + 0.999))
        stored_pin = repo.credentials(self.store.db, user_id)[1]
        if stored_pin is None:
            return LoginResult(outcome="unavailable")
        if not self.hasher.verify(stored_pin, pin):
            self.audit.record(
                actor.event("login", "user", user_id, purpose="authentication", outcome="failure")
            )
            self._fail([addr_key], now, actor, user_id)
            with self.store.write() as db:
                key = f"pin:{user_id}"
                state = repo.failure_state(db, key)
                failures = state.failures + 1
                if failures >= self.settings.pin_max_failures:
                    repo.clear_failures(db, key)
                    repo.forget_terminal_logins(db, user_id)
                    self.audit.record(
                        actor.event(
                            "lockout",
                            "user",
                            user_id,
                            purpose="authentication",
                            outcome="pin_disabled",
                        )
                    )
                else:
                    repo.put_failure_state(
                        db, key, logic.FailureState(failures=failures, last_failure=now)
                    )
            return LoginResult(outcome="failure")
        return self._succeed(user, f"pin:{user_id}", actor, "pin")

    def login_external(self, user: Versioned[User], method: str, actor: Actor) -> LoginResult:
        """A login proven elsewhere (external provider, CPS card): status check and audit."""
        return self._succeed(user, f"user:{user.entity_id}", actor, method)

    def pin_candidates(self, terminal_hash: str) -> list[User]:
        """Active users with a PIN who logged in fully on this terminal today."""
        now = self.clock()
        db = self.store.db
        found = []
        for user_id, at in sorted(repo.terminal_logins(db, terminal_hash).items()):
            if not logic.same_local_day(at, now, self.settings.timezone):
                continue
            item = repo.get_user(db, user_id)
            if item is None or item.entity.status != "active":
                continue
            if repo.credentials(db, user_id)[1] is None:
                continue
            found.append(item.entity)
        return found


def revoke_family_tokens(db: sqlite_utils.Database, family_id: str, now: float, reason: str) -> int:
    """Revoke a refresh-token family and deny its unexpired access tokens; 1 if it was live."""
    changed = repo.revoke_family(db, family_id, now, reason)
    for jti, expires_at in repo.family_access_tokens(db, family_id, now):
        revoke_token(db, jti, expires_at)
    return 1 if changed else 0
