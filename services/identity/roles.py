"""Roles and the scopes they grant: the one table the server enforces and the docs print.

Each route declares the scopes it needs (``guards=[requires(...)]``); a token carries the
scopes of its holder's role (or fewer, when a client asks for fewer). ``x:*`` grants every
``x:...`` scope, present and future. ``docs/security.md`` prints :func:`markdown_table`, and a
test keeps the two identical.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import msgspec

from appliance.security import scope_allows


class Role(StrEnum):
    PHARMACIEN_TITULAIRE = "pharmacien_titulaire"
    PHARMACIEN_ADJOINT = "pharmacien_adjoint"
    PREPARATEUR = "preparateur"
    ETUDIANT = "etudiant"
    ADMIN_TECHNIQUE = "admin_technique"
    CLIENT_MACHINE = "client_machine"


RppsRule = Literal["required", "optional", "none"]

SCOPES: dict[str, str] = {
    "openid": "OpenID Connect sign-in (ID token, /oauth/userinfo)",
    "profile": "name, username and RPPS number in the ID token and userinfo",
    "account:self": "one's own account: profile, password, PIN",
    "patients:read": "read patient records",
    "patients:write": "create and update patient records",
    "patients:reidentify": "find the patient behind a pseudonym",
    "bpm:read": "read Bilan Partagé de Médication cycles",
    "bpm:write": "run Bilan Partagé de Médication cycles (interview, analysis, follow-up)",
    "analysis:run": "run the clinical analysis (interactions, STOPP/START)",
    "documents:read": "read and download generated documents and exports",
    "documents:write": "generate BPM documents (synthesis, plan de prise, fiches) and exports",
    "documents:sign": "sign documents (BPM reports, letters to prescribers)",
    "prescriptions:import": "import prescriptions from scans, PDFs and files as drafts to review",
    "llm:read": "read LLM drafts, their validation and their traces",
    "llm:generate": "ask the local LLMs for a draft (BPM synthesis, advice, interview summary)",
    "cards:read": "read Vitale and CPS cards in the counter's readers",
    "billing:read": "read invoices, FSE lots, returns and payments",
    "billing:write": "bill the pharmacy's services",
    "medications:read": "read the medication catalogue (BDPM, interactions reference data)",
    "workstations:read": "list counter workstations",
    "workstations:write": "declare and change counter workstations",
    "staff:manage": "manage accounts of clinical roles (those with patient data)",
    "admin:users": "manage accounts of technical roles; unlock, suspend any account",
    "admin:clients": "manage OAuth clients (integrations)",
    "admin:tokens": "revoke any user's sessions",
    "admin:models": "register, load and unload local LLM models",
    "admin:sync": "run the cloud synchronisation and read its status",
    "admin:backup": "create, verify and restore encrypted backups",
    "audit:read": "read the audit trail (ids and codes only)",
}
"""Every concrete scope a route may require (``x:*`` grants are written in role rows)."""

OIDC_SCOPES = frozenset({"openid", "profile"})


class RoleSpec(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    label: str
    """French name as staff know it."""
    scopes: frozenset[str]
    rpps: RppsRule
    """Whether accounts of this role carry an RPPS number."""
    human: bool = True
    patient_data: bool = False
    """Grants access to patient data: only ``staff:manage`` holders assign or reset it."""


_HUMAN = frozenset({"openid", "profile", "account:self"})

ROLES: dict[Role, RoleSpec] = {
    spec.role: spec
    for spec in (
        RoleSpec(
            role=Role.PHARMACIEN_TITULAIRE,
            label="Pharmacien titulaire",
            scopes=_HUMAN
            | {
                "patients:read",
                "patients:write",
                "patients:reidentify",
                "bpm:read",
                "bpm:write",
                "analysis:run",
                "documents:read",
                "documents:write",
                "documents:sign",
                "prescriptions:import",
                "llm:read",
                "llm:generate",
                "cards:read",
                "billing:read",
                "billing:write",
                "medications:read",
                "workstations:read",
                "workstations:write",
                "staff:manage",
                "admin:users",
                "admin:tokens",
                "admin:models",
                "admin:sync",
                "admin:backup",
                "audit:read",
            },
            rpps="required",
            patient_data=True,
        ),
        RoleSpec(
            role=Role.PHARMACIEN_ADJOINT,
            label="Pharmacien adjoint",
            scopes=_HUMAN
            | {
                "patients:read",
                "patients:write",
                "patients:reidentify",
                "bpm:read",
                "bpm:write",
                "analysis:run",
                "documents:read",
                "documents:write",
                "documents:sign",
                "prescriptions:import",
                "llm:read",
                "llm:generate",
                "cards:read",
                "billing:read",
                "billing:write",
                "medications:read",
                "workstations:read",
            },
            rpps="required",
            patient_data=True,
        ),
        RoleSpec(
            role=Role.PREPARATEUR,
            label="Préparateur en pharmacie",
            scopes=_HUMAN
            | {
                "patients:read",
                "patients:write",
                "bpm:read",
                "documents:read",
                "prescriptions:import",
                "llm:read",
                "cards:read",
                "billing:read",
                "billing:write",
                "medications:read",
                "workstations:read",
            },
            rpps="optional",
            patient_data=True,
        ),
        RoleSpec(
            role=Role.ETUDIANT,
            label="Étudiant / stagiaire",
            scopes=_HUMAN
            | {
                "patients:read",
                "bpm:read",
                "bpm:write",
                "analysis:run",
                "documents:read",
                "documents:write",
                "prescriptions:import",
                "llm:read",
                "llm:generate",
                "medications:read",
                "workstations:read",
            },
            rpps="optional",
            patient_data=True,
        ),
        RoleSpec(
            role=Role.ADMIN_TECHNIQUE,
            label="Administrateur technique (sans accès aux données patients)",
            scopes=_HUMAN | {"admin:*", "workstations:*", "audit:read"},
            rpps="none",
        ),
        RoleSpec(
            role=Role.CLIENT_MACHINE,
            label="Client machine (intégration, client credentials)",
            scopes=frozenset({"patients:read", "patients:write", "billing:write"}),
            rpps="none",
            human=False,
            patient_data=True,
        ),
    )
}

HUMAN_ROLES = tuple(role for role, spec in ROLES.items() if spec.human)
ALL_SCOPES: tuple[str, ...] = tuple(sorted(SCOPES))


def role_scopes(role: Role | str) -> frozenset[str]:
    """The scopes ``role`` grants (empty for an unknown role: fail closed)."""
    try:
        return ROLES[Role(role)].scopes
    except ValueError:
        return frozenset()


def expand(granted: frozenset[str]) -> frozenset[str]:
    """The concrete catalogue scopes that ``granted`` (with wildcards) allows."""
    return frozenset(scope for scope in SCOPES if scope_allows(granted, scope))


def markdown_table() -> str:
    """The role → scope table as printed in ``docs/security.md``."""
    roles = list(ROLES.values())
    header = "| scope | " + " | ".join(f"`{spec.role.value}`" for spec in roles) + " |"
    rule = "|---|" + "|".join(":-:" for _ in roles) + "|"
    lines = [header, rule]
    for scope in SCOPES:
        marks = ["✓" if scope_allows(spec.scopes, scope) else "" for spec in roles]
        lines.append(f"| `{scope}` | " + " | ".join(marks) + " |")
    return "\n".join(lines)
