"""The counter UI in process: route guards, sessions (refresh, revocation, expiry), CSRF,
redirect safety, roles, audit, scanner input. The browser flows are in test_web_e2e.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
from litestar.testing import TestClient

from appliance.security import declared_scopes
from appliance.web.core import safe_next, session_cookie, session_store
from appliance.web.pages import review_text, scanned_code
from appliance.web.sessions import PENDING_TTL_S, SessionStore
from services.identity.roles import SCOPES
from tests.identity_support import PASSWORD, app_platform, make_user, shared_client

BASE = "http://127.0.0.1:8000"  # the issuer of the test settings (host and port defaults)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with shared_client(tmp_path_factory.mktemp("webapp")) as client:
        platform = app_platform(client)
        make_user(platform, "titulaire", "pharmacien_titulaire", display_name="Anne Titulaire")
        make_user(platform, "prep", "preparateur", display_name="Paul Prep")
        make_user(platform, "tech", "admin_technique", display_name="Tom Tech")
        yield client.app


def signed_in(app: Any, username: str, target: str = "/ui/") -> TestClient[Any]:
    """A browser-like client that went through /ui → login page → callback."""
    client = TestClient(app=app, base_url=BASE)
    client.__enter__()
    start = client.get(target, follow_redirects=False)
    assert start.status_code == 303, start.text
    authorize = client.get(start.headers["location"], follow_redirects=False)
    if authorize.status_code == 303:  # /ui/login → /oauth/authorize
        authorize = client.get(authorize.headers["location"])
    request_id = re.search(r'name="request_id" value="([^"]+)"', authorize.text)
    assert request_id, authorize.text
    answer = client.post(
        "/oauth/authorize",
        data={
            "request_id": request_id.group(1),
            "method": "password",
            "username": username,
            "password": PASSWORD,
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    back = client.get(answer.headers["location"], follow_redirects=False)
    assert back.status_code == 303, back.text
    assert back.headers["location"].rstrip("/") == target.rstrip("/")
    return client


def csrf_of(client: TestClient[Any]) -> str:
    found = _CSRF.search(client.get("/ui/").text)
    assert found
    return found.group(1)


def test_every_ui_route_declares_its_scopes_or_is_deliberately_public(app: Any) -> None:
    problems = []
    seen = 0
    for route in app.routes:
        if not route.path.startswith("/ui"):
            continue
        for handler in getattr(route, "route_handlers", []):
            if set(getattr(handler, "http_methods", ())) == {"OPTIONS"}:
                continue  # Litestar's automatic CORS preflight handlers
            seen += 1
            scopes = declared_scopes(handler)
            public = bool(handler.opt.get("public"))
            if public == (scopes is not None):
                problems.append(f"{route.path}: public={public} scopes={scopes}")
            unknown = sorted(set(scopes or ()) - set(SCOPES))
            if unknown:
                problems.append(f"{route.path}: unknown scopes {unknown}")
            if public and not (
                route.path.startswith(("/ui/static", "/ui/vendor"))
                or route.path in {"/ui/login", "/ui/login/start", "/ui/callback"}
            ):
                problems.append(f"{route.path}: public page")
    assert seen > 30
    assert problems == []


def test_pages_need_a_session_and_keep_the_target(app: Any) -> None:
    with TestClient(app=app, base_url=BASE) as client:
        answer = client.get("/ui/patients?q=dupont", follow_redirects=False)
        assert answer.status_code == 303
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        assert query == {"reason": ["login"], "next": ["/ui/patients?q=dupont"]}
        htmx = client.get("/ui/patients", headers={"HX-Request": "true"}, follow_redirects=False)
        assert htmx.status_code == 200
        assert htmx.headers["HX-Redirect"].startswith("/ui/login?reason=login")
        start = client.get("/ui/login/start?next=/ui/bpm", follow_redirects=False)
        params = parse_qs(urlsplit(start.headers["location"]).query)
        assert params["client_id"] == ["hygie-web"]
        assert params["code_challenge_method"] == ["S256"]
        assert params["redirect_uri"] == [BASE + "/ui/callback"]
        assert "scope" not in params  # the role's scopes
        cookie = start.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()


def test_callback_refuses_a_state_it_did_not_issue(app: Any) -> None:
    with TestClient(app=app, base_url=BASE) as client:
        answer = client.get("/ui/callback?code=abc&state=forged", follow_redirects=False)
        assert answer.headers["location"] == "/ui/login?reason=failed"
        client.get("/ui/login/start", follow_redirects=False)  # a real pending login...
        client.cookies.clear()  # ...but not from this browser
        state = "x"
        answer = client.get(f"/ui/callback?code=abc&state={state}", follow_redirects=False)
        assert answer.headers["location"] == "/ui/login?reason=failed"


def test_roles_see_only_what_their_scopes_allow(app: Any) -> None:
    tech = signed_in(app, "tech")
    try:
        refused = tech.get("/ui/patients")
        assert refused.status_code == 403
        assert "Votre rôle ne donne pas accès" in refused.text
        assert tech.get("/ui/admin").status_code == 200
    finally:
        tech.__exit__(None, None, None)
    prep = signed_in(app, "prep")
    try:
        assert prep.get("/ui/patients").status_code == 200
        assert prep.get("/ui/admin/audit").status_code == 403
        home = prep.get("/ui/")
        assert "Bilans (BPM)" in home.text
        assert "Changer d'utilisateur" in home.text
    finally:
        prep.__exit__(None, None, None)


def test_csrf_token_and_origin_are_checked(app: Any) -> None:
    client = signed_in(app, "titulaire")
    try:
        form = {"identity.birth_family_name": "X", "identity.given_names": "Y"}
        assert client.post("/ui/patients/new", data=form).status_code == 403
        bad = client.post("/ui/patients/new", data={**form, "csrf_token": "nope"})
        assert bad.status_code == 403
        assert "formulaire a expiré" in bad.text
        token = csrf_of(client)
        foreign = client.post(
            "/ui/patients/new",
            data={**form, "csrf_token": token},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        same = client.post(
            "/ui/patients/new",
            data={**form, "csrf_token": token, "identity.birth_date": "1950-01-01"},
            headers={"Origin": BASE},
        )
        assert same.status_code == 400  # reached the form: sex missing, shown by field
        assert 'id="e-identity-sex"' in same.text
    finally:
        client.__exit__(None, None, None)


def test_expired_access_token_is_refreshed_and_revocation_ends_the_session(app: Any) -> None:
    client = signed_in(app, "titulaire")
    try:
        store = session_store(app)
        sid = client.cookies.get("hygie_session")
        session = store.get(sid)
        assert session is not None
        old = session.access_token
        session.access_expires_at = 0  # as if five minutes had passed
        assert client.get("/ui/patients").status_code == 200
        assert session.access_token != old  # refreshed with the refresh token
        token = csrf_of(client)
        logout = client.post("/ui/logout", data={"csrf_token": token}, follow_redirects=False)
        assert logout.headers["location"] == "/ui/login?reason=logout"
        assert store.get(sid) is None
        client.cookies.set("hygie_session", sid or "", path="/ui")
        again = client.get("/ui/patients", follow_redirects=False)
        assert again.status_code == 303
        assert "reason=expired" in again.headers["location"]
    finally:
        client.__exit__(None, None, None)


def test_patient_pages_are_audited_with_the_browser_and_the_user(app: Any) -> None:
    client = signed_in(app, "titulaire")
    try:
        token = csrf_of(client)
        created = client.post(
            "/ui/patients/new",
            data={
                "csrf_token": token,
                "identity.birth_family_name": "AUDIT",
                "identity.given_names": "Alice",
                "identity.birth_date": "1944-04-04",
                "identity.sex": "F",
            },
            follow_redirects=False,
        )
        assert created.status_code == 303, created.text
        pid = created.headers["location"].rsplit("/", 1)[1]
        page = client.get(f"/ui/patients/{pid}")
        assert page.status_code == 200
        platform = app_platform(client)
        reads = [
            e
            for e in platform.audit.entries(limit=100_000)
            if e.object_id == pid and e.action == "read"
        ]
        assert reads
        assert reads[-1].role == "pharmacien_titulaire"
        assert reads[-1].request_id == page.headers["x-request-id"]  # the page's request
    finally:
        client.__exit__(None, None, None)


def test_login_redirects_only_inside_the_ui() -> None:
    assert safe_next("/ui/patients/1?x=2") == "/ui/patients/1?x=2"
    for bad in ("//evil.example/ui/", "https://evil.example", "/api/v1/patients", "/ui\\x", ""):
        assert safe_next(bad) == "/ui/"
    assert safe_next(None) == "/ui/"


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("010340093569309917270331" + "10LOT42", "3400935693099"),  # GS1 DataMatrix
        ("]d2010340093569309917270331\x1d10LOT", "3400935693099"),  # with symbology id, GS
        ("03400935693099", "3400935693099"),  # GTIN-14
        ("3400935693099", "3400935693099"),  # CIP13
        ("3569309", "3569309"),  # CIP7
        ("coumadine", None),
        ("63245753", None),  # a CIS is a search, not a box
    ],
)
def test_scanner_input_is_recognised(typed: str, code: str | None) -> None:
    assert scanned_code(typed) == code


def test_session_store_expiry_and_single_use_logins() -> None:
    now = [1000.0]
    store = SessionStore(clock=lambda: now[0])
    pending = store.begin_login("verifier", "/ui/bpm")
    assert store.take_login(pending.state) == pending
    assert store.take_login(pending.state) is None  # once
    late = store.begin_login("v2", "/ui/")
    now[0] += PENDING_TTL_S + 1
    assert store.take_login(late.state) is None
    session = store.create({"access_token": "a", "expires_in": 300, "refresh_expires_in": 1800})
    assert store.get(session.session_id) is session
    now[0] += 1801
    assert store.get(session.session_id) is None
    assert store.get("x" * 65) is None


def test_static_and_vendor_files(app: Any, tmp_path: Path) -> None:
    with TestClient(app=app, base_url=BASE) as client:
        css = client.get("/ui/static/app.css")
        assert css.status_code == 200
        assert "--brand" in css.text
        htmx = client.get("/ui/vendor/htmx.min.js")
        assert htmx.status_code == 200, "npm packages missing: run ./install.sh"
        assert "htmx" in htmx.text[:2000]
        assert client.get("/ui/vendor/../package.json").status_code == 404
        assert client.get("/ui/vendor/axe.min.js").status_code == 404


def test_vitale_read_shows_the_card_error_or_fills_the_form(app: Any) -> None:
    client = signed_in(app, "titulaire")
    try:
        token = csrf_of(client)
        answer = client.post(
            "/ui/cards/vitale", data={"csrf_token": token}, headers={"HX-Request": "true"}
        )
        assert answer.status_code == 200
        # No reader on the test machine's pcscd (or no pcscd): the cards API's French message.
        assert 'role="alert"' in answer.text
        session = session_store(app).get(client.cookies.get("hygie_session"))
        assert session is not None
        session.scratch["vitale"] = [
            {
                "surname": "MARTIN",
                "first_name": "JEANNE",
                "birth_date": "1948-03-12",
                "patient_id": None,
                "form": {
                    "identity": {
                        "birth_family_name": "MARTIN",
                        "given_names": "JEANNE",
                        "birth_date": "1948-03-12",
                        "sex": "F",
                        "nir": "248037512345658",
                    }
                },
            }
        ]
        form = client.get("/ui/patients/new?card=0")
        assert "pré-rempli depuis la carte Vitale" in form.text
        assert 'value="248037512345658"' in form.text
        assert 'value="MARTIN"' in form.text
    finally:
        client.__exit__(None, None, None)


def test_patient_edit_keeps_the_rest_of_the_record_and_refuses_stale_versions(app: Any) -> None:
    client = signed_in(app, "titulaire")
    try:
        token = csrf_of(client)
        created = client.post(
            "/ui/patients/new",
            data={
                "csrf_token": token,
                "identity.birth_family_name": "EDIT",
                "identity.given_names": "Eve",
                "identity.birth_date": "1939-09-09",
                "identity.sex": "F",
                "gp.name": "Dr Alain Roux",
            },
            follow_redirects=False,
        )
        assert created.status_code == 303, created.text
        pid = created.headers["location"].rsplit("/", 1)[1]
        form = client.get(f"/ui/patients/{pid}/edit")
        assert 'value="Dr Alain Roux"' in form.text
        values = {
            "csrf_token": token,
            "expected_version": "1",
            "identity.birth_family_name": "EDIT",
            "identity.given_names": "Eve",
            "identity.birth_date": "1939-09-09",
            "identity.sex": "F",
            "gp.name": "Dr Alain Roux",
            "contact.phone": "04 78 00 00 00",
        }
        saved = client.post(f"/ui/patients/{pid}/edit", data=values, follow_redirects=False)
        assert saved.status_code == 303, saved.text
        page = client.get(f"/ui/patients/{pid}")
        assert "Dr Alain Roux" in page.text
        stale = client.post(f"/ui/patients/{pid}/edit", data=values, follow_redirects=False)
        assert stale.status_code == 400
        assert "Le dossier a été modifié par quelqu" in stale.text
    finally:
        client.__exit__(None, None, None)


def test_cookies_are_secure_when_the_issuer_is_https(app: Any) -> None:
    from types import SimpleNamespace

    from litestar.datastructures import State

    settings = app.state.settings
    for url, secure in (("https://hygie.local:8443", True), ("http://127.0.0.1:8000", False)):
        fake = SimpleNamespace(
            state=State(
                {"platform": None, "settings": settings.model_copy(update={"public_url": url})}
            )
        )
        cookie = session_cookie(fake, "abc")
        assert cookie.secure is secure
        assert cookie.httponly
        assert cookie.samesite == "lax"
        assert cookie.path == "/ui"


def test_reviewed_analysis_in_words() -> None:
    analysis = {
        "id": "an-1",
        "as_of": "2026-11-25",
        "findings": [
            {"rule": "R1", "message": "M1", "recommendation_gp": "G1"},
            {"rule": "R2", "message": "M2", "recommendation_gp": "G2"},
            {"rule": "R3", "message": "M3", "recommendation_gp": "G3"},
        ],
    }
    review = {
        "decisions": {
            0: {"decision": "edited", "text": "T1", "reason": ""},
            1: {"decision": "dismissed", "text": "", "reason": "déjà discuté"},
        },
        "proposals": ["P1"],
    }
    assert review_text(analysis, review).split("\n") == [
        "Analyse an-1 du 25/11/2026",
        "- [Retenue (modifiée)] R1 : M1 — Proposition : T1",
        "- [Écartée] R2 : M2 — Motif : déjà discuté",
        "- [Non traitée] R3 : M3",
        "- [Proposition du pharmacien] P1",
    ]


def test_analysis_review_is_stored_as_it_is_made_and_survives_a_restart(app: Any) -> None:
    """Each decision and proposal goes to the analysis service at once: a fresh server
    process (new sessions, empty memory) on the same store shows them again."""
    import json

    from appliance.app import create_app

    vignette = Path(__file__).parent / "fixtures" / "vignettes" / "dose-doac-rivaroxaban.json"
    bundle = json.loads(vignette.read_text())["bundle"]
    with TestClient(app=app, base_url=BASE) as api_client:
        platform = app_platform(api_client)  # open while a client is (lifespan)
        settings = platform.settings
        assert platform.tokens is not None
        token = platform.tokens.issue(
            subject="titulaire", role="pharmacien_titulaire", scopes=SCOPES
        )
        created = api_client.post(
            "/api/v1/analyses", json=bundle, headers={"Authorization": f"Bearer {token}"}
        )
    assert created.status_code == 201, created.text
    analysis = created.json()
    page_path = f"/ui/analyses/{analysis['id']}"
    client = signed_in(app, "titulaire")
    try:
        csrf = csrf_of(client)
        decided = client.post(
            f"{page_path}/findings/0",
            data={"csrf_token": csrf, "decision": "edited", "text": "Texte du pharmacien"},
            headers={"HX-Request": "true"},
        )
        assert decided.status_code == 200, decided.text
        assert "retenue et modifiée" in decided.text
        refused = client.post(
            f"{page_path}/findings/0",
            data={"csrf_token": csrf, "decision": "edited", "text": " "},
        )
        assert refused.status_code == 400
        assert "Décision refusée" in refused.text
        proposal = {"csrf_token": csrf, "proposal": "Revoir la fonction rénale"}
        proposed = client.post(f"{page_path}/proposals", data=proposal)
        assert proposed.status_code == 200, proposed.text
        assert "Revoir la fonction rénale" in proposed.text
    finally:
        client.__exit__(None, None, None)

    restarted = create_app(settings)
    again = signed_in(restarted, "titulaire")
    try:
        page = again.get(page_path)
        assert page.status_code == 200, page.text
        assert "retenue et modifiée" in page.text
        assert "Texte du pharmacien" in page.text
        assert "Revoir la fonction rénale" in page.text
    finally:
        again.__exit__(None, None, None)


def test_bpm_follow_ups_are_planned_on_the_cycle_page_and_listed_when_late(app: Any) -> None:
    from datetime import date, timedelta

    from services.patients import bpm
    from services.patients import store as patients_store

    client = signed_in(app, "titulaire")
    try:
        token = csrf_of(client)
        created = client.post(
            "/ui/patients/new",
            data={
                "csrf_token": token,
                "identity.birth_family_name": "SUIVI",
                "identity.given_names": "Odile",
                "identity.birth_date": "1941-04-04",
                "identity.sex": "F",
            },
            follow_redirects=False,
        )
        assert created.status_code == 303, created.text
        pid = created.headers["location"].rsplit("/", 1)[1]
        enrolled = client.post(
            f"/ui/patients/{pid}/bpm/enrol",
            data={"csrf_token": token, "consent": "on"},
            follow_redirects=False,
        )
        assert enrolled.status_code == 303, enrolled.text
        cycle_page = enrolled.headers["location"]
        cid = cycle_page.rsplit("/", 1)[1]
        page = client.get(cycle_page)
        assert "Planifier la prochaine étape" in page.text
        assert '<label for="fu-due-on">Date prévue</label>' in page.text
        assert "Aucune étape planifiée." in page.text

        due = (date.today() + timedelta(days=3)).isoformat()
        form = {"csrf_token": token, "expected_version": "2", "kind": "recueil", "due_on": due}
        planned = client.post(f"/ui/bpm/{cid}/follow-ups", data=form, follow_redirects=False)
        assert planned.status_code == 303, planned.text
        page = client.get(cycle_page)
        assert "à faire" in page.text
        assert "en retard" not in page.text
        past = {**form, "expected_version": "3", "due_on": "2020-01-01"}
        refused = client.post(f"/ui/bpm/{cid}/follow-ups", data=past)
        assert refused.status_code == 400
        assert "la date prévue ne peut pas être dans le passé" in refused.text
        done = {**form, "expected_version": "3", "kind": "adhesion"}
        refused = client.post(f"/ui/bpm/{cid}/follow-ups", data=done)
        assert refused.status_code == 409
        assert "cette étape est déjà faite" in refused.text

        # A plan made a week ago for yesterday (the rule only refuses a past date at the
        # time of planning): the cycle page and the BPM home show it « en retard ».
        store = app.state.platform.store
        item = patients_store.get_cycle(store, cid)
        assert item is not None
        week_ago = date.today() - timedelta(days=7)
        late = bpm.plan_follow_up(
            item.entity.cycle,
            "analyse",
            due_on=date.today() - timedelta(days=1),
            planned_by="titulaire",
            today=week_ago,
        )
        patients_store.save_cycle(
            store,
            msgspec.structs.replace(item.entity, cycle=late),
            actor="titulaire",
            expected_version=item.version,
        )
        page = client.get(cycle_page)
        assert page.text.count('<span class="badge warn">en retard</span>') == 1
        home = client.get("/ui/bpm")
        assert home.status_code == 200
        assert f'href="/ui/bpm/{cid}">SUIVI Odile</a>' in home.text
        assert "en retard" in home.text

        cancel = {"csrf_token": token, "expected_version": "4", "kind": "analyse"}
        cancelled = client.post(
            f"/ui/bpm/{cid}/follow-ups", data={**cancel, "action": "cancel"}, follow_redirects=False
        )
        assert cancelled.status_code == 303, cancelled.text
        assert "en retard" not in client.get(cycle_page).text
    finally:
        client.__exit__(None, None, None)
