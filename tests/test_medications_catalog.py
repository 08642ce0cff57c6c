"""The BDPM catalog end to end: CLI import of the fixture subset, bad files, history, API."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from litestar.testing import TestClient

from appliance.cli import main
from appliance.config import Settings
from appliance.platform import Platform
from services.medications import PLUGINS, interactions_for_specialities, knowledge_editions
from services.medications import store as repository

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bdpm-mini"
DOLIPRANE = "60234100"
DOLIPRANE_CIP13 = "3400935955838"


def _import(folder: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["catalog", "import", str(folder), *args])


def _copy(tmp_path: Path, name: str = "bdpm") -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """The app with this service only, so other services' work in progress cannot break it."""
    from appliance.app import create_app

    app = create_app(settings, plugins=PLUGINS)
    with TestClient(app=app) as test_client:
        yield test_client


def _counts(platform: Platform) -> dict[str, int]:
    return repository.table_counts(platform.store)


@pytest.fixture
def imported(env: dict[str, str]) -> Result:
    result = _import(FIXTURE)
    assert result.exit_code == 0, result.output
    return result


def test_import_reports_counts_coverage_and_is_idempotent(
    imported: Result, platform: Platform
) -> None:
    assert "catalog bdpm-mini#" in imported.output
    assert "CIS_bdpm.txt (utf-8): 289 lines, 289 loaded, 0 rejected" in imported.output
    assert "is not in CIS_bdpm" in imported.output  # withdrawn generics, reported by line
    assert "ATC coverage: marketed specialities" in imported.output
    counts = _counts(platform)
    assert counts["med_specialities"] == 289
    again = _import(FIXTURE)
    assert again.exit_code == 0
    assert "already in force" in again.output
    forced = _import(FIXTURE, "--force")
    assert forced.exit_code == 0, forced.output
    assert "status history: 0 change(s)" in forced.output
    assert _counts(platform) == counts
    entries = [
        (e.actor, e.action, e.object_type, e.purpose, e.client_addr, e.outcome)
        for e in platform.audit.entries()
    ]
    assert entries == [("system:cli", "import", "catalog", "admin", "local", "success")] * 2
    editions = knowledge_editions(platform.store)
    assert editions["catalog"] is not None
    assert editions["catalog"].startswith("bdpm-mini#")
    assert editions["thesaurus"] == "ansm-2019-09"


def test_windows_1252_files_are_detected(
    env: dict[str, str], tmp_path: Path, platform: Platform
) -> None:
    folder = _copy(tmp_path)
    for path in folder.iterdir():
        path.write_bytes(path.read_text(encoding="utf-8").encode("cp1252", errors="replace"))
    result = _import(folder)
    assert result.exit_code == 0, result.output
    assert "CIS_bdpm.txt (windows-1252)" in result.output
    name = platform.store.db.execute(
        "SELECT name FROM med_specialities WHERE cis = ?", [DOLIPRANE]
    ).fetchone()[0]
    assert name == "DOLIPRANE 1000 mg, comprimé"


def _truncate_line(folder: Path) -> None:
    path = folder / "CIS_CIP_bdpm.txt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _utf16(folder: Path) -> None:
    path = folder / "CIS_COMPO_bdpm.txt"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))


def _drop_column(folder: Path) -> None:
    path = folder / "CIS_bdpm.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join("\t".join(line.split("\t")[:-1]) for line in lines) + "\n")


def _empty(folder: Path) -> None:
    (folder / "CIS_MITM.txt").write_bytes(b"")


def _missing(folder: Path) -> None:
    (folder / "CIS_GENER_bdpm.txt").unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate_line, "CIS_CIP_bdpm.txt line"),
        (_utf16, "wrong encoding"),
        (_drop_column, "11 fields, expected 12"),
        (_empty, "CIS_MITM.txt: the file is empty"),
        (_missing, "missing file(s): CIS_GENER_bdpm.txt"),
    ],
    ids=["truncated-line", "wrong-encoding", "missing-column", "empty-file", "missing-file"],
)
def test_bad_files_leave_the_catalog_intact(
    imported: Result,
    platform: Platform,
    tmp_path: Path,
    damage: Callable[[Path], None],
    message: str,
) -> None:
    before = _counts(platform)
    folder = _copy(tmp_path, "damaged")
    damage(folder)
    result = _import(folder)
    assert result.exit_code == 1
    assert message in result.output
    assert "catalog in force is unchanged" in result.output or "missing file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert _counts(platform) == before
    last = platform.audit.entries()[-1]
    assert (last.object_type, last.outcome) == ("catalog", "failure")


def test_cli_usage_errors(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["catalog", "import"])
    assert result.exit_code == 2
    result = _import(tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "is not a folder" in result.output


def _second_edition(tmp_path: Path) -> Path:
    """The fixture with a price change, a stop of marketing and a new shortage."""
    folder = _copy(tmp_path, "bdpm-next")
    cip = folder / "CIS_CIP_bdpm.txt"
    lines = cip.read_text(encoding="utf-8").split("\n")
    for index, line in enumerate(lines):
        fields = line.split("\t")
        if fields[0] == DOLIPRANE and fields[6] == DOLIPRANE_CIP13:
            fields[9] = "0,99"
            lines[index] = "\t".join(fields)
    cip.write_text("\n".join(lines), encoding="utf-8")
    spec = folder / "CIS_bdpm.txt"
    text = spec.read_text(encoding="utf-8")
    start = text.index("\n" + DOLIPRANE + "\t") + 1
    end = text.index("\n", start)
    line = text[start:end].replace("\tCommercialisée\t", "\tNon commercialisée\t")
    spec.write_text(text[:start] + line + text[end:], encoding="utf-8")
    supply = folder / "CIS_CIP_Dispo_Spec.txt"
    shortage = f"{DOLIPRANE}\t{DOLIPRANE_CIP13}\t1\tRupture de stock\t01/07/2025\t04/07/2025\t\t"
    supply.write_bytes(supply.read_bytes() + shortage.encode() + b"\r\n")
    return folder


def test_history_records_changes_between_imports(
    imported: Result, tmp_path: Path, client: Any, token_for: Callable[..., str]
) -> None:
    result = _import(_second_edition(tmp_path))
    assert result.exit_code == 0, result.output
    headers = {"Authorization": f"Bearer {token_for('medications:read')}"}
    reply = client.get(f"/api/v1/medications/{DOLIPRANE}/history", headers=headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["baseline"].startswith("bdpm-mini#")
    kinds = {(e["kind"], e["old"], e["new"]) for e in body["events"]}
    assert ("speciality_status", "commercialisée", "non commercialisée") in kinds
    assert any(k == "price" and new == "0.99" for k, _old, new in kinds)
    assert any(k == "availability_started" and "Rupture" in new for k, _old, new in kinds)
    assert all(e["catalog_edition"].startswith("bdpm-next#") for e in body["events"])
    view = client.get(f"/api/v1/medications/{DOLIPRANE}", headers=headers).json()
    assert view["marketed"] is False
    assert view["shortages"][0]["status"] == "Rupture de stock"


def _get(client: Any, headers: dict[str, str], **params: Any) -> Any:
    reply = client.get("/api/v1/medications", params=params, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.fixture
def reader(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('medications:read')}"}


def test_search_by_every_key(imported: Result, client: Any, reader: dict[str, str]) -> None:
    by_prefix = _get(client, reader, q="dolipr", by="name")
    assert DOLIPRANE in [item["cis"] for item in by_prefix]
    by_text = _get(client, reader, q="paracétamol")
    assert DOLIPRANE in [item["cis"] for item in by_text]
    assert _get(client, reader, q="PARACETAMOL", by="substance")
    item = _get(client, reader, q=DOLIPRANE)[0]
    assert item["cis"] == DOLIPRANE
    assert item["status"] == "commercialisée"
    assert item["substances"] == ["PARACÉTAMOL"]
    assert item["atc"] == "N02BE01"
    assert item["atc_source"] in {
        "direct",
        "generic_group",
        "composition_route",
        "composition",
        "composition_name",
    }
    box = next(p for p in item["presentations"] if p["cip13"] == DOLIPRANE_CIP13)
    assert box["reimbursement_rate"] == 65
    assert box["price_eur"] is not None
    for code in (
        box["cip7"],
        DOLIPRANE_CIP13,
        "0" + DOLIPRANE_CIP13,
        f"010{DOLIPRANE_CIP13}17270131\x1d10LOT1",
    ):
        assert _get(client, reader, q=code)[0]["cis"] == DOLIPRANE, code
    scanned = client.get(
        "/api/v1/medications/scan", params={"code": f"010{DOLIPRANE_CIP13}17270131"}, headers=reader
    )
    assert scanned.json()["cis"] == DOLIPRANE
    assert _get(client, reader, q="zzzzqqq") == []


def test_search_says_generic_group_and_supply(
    imported: Result, client: Any, reader: dict[str, str]
) -> None:
    items = _get(client, reader, q="amlodipine", limit=50)
    assert any(item["generic_group"] for item in items)
    roles = {item["generic_group"]["role"] for item in items if item["generic_group"]}
    assert "générique" in roles
    everything = _get(client, reader, q="comprimé", limit=50)
    assert all(
        set(item) >= {"reinforced_monitoring", "shortages", "reimbursement_rates"}
        for item in everything
    )


def test_api_errors_are_problems(imported: Result, client: Any, reader: dict[str, str]) -> None:
    assert client.get("/api/v1/medications/99999999", headers=reader).status_code == 404
    bad = client.get("/api/v1/medications/12", headers=reader)
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert client.get("/api/v1/medications", params={"q": "   "}, headers=reader).status_code == 400
    assert (
        client.get("/api/v1/medications", params={"q": "x", "limit": 0}, headers=reader).status_code
        == 400
    )
    assert (
        client.get("/api/v1/medications/scan", params={"code": "abc"}, headers=reader).status_code
        == 400
    )
    assert client.get("/api/v1/medications/99999999/history", headers=reader).status_code == 404
    assert (
        client.get(
            "/api/v1/medications/interactions", params={"atc": "N02BE01"}, headers=reader
        ).status_code
        == 400
    )
    assert (
        client.get(
            "/api/v1/medications/interactions", params={"atc": ["x", "y"]}, headers=reader
        ).status_code
        == 400
    )


def test_reads_need_the_scope(imported: Result, client: Any, token_for: Callable[..., str]) -> None:
    assert client.get("/api/v1/medications", params={"q": "doli"}).status_code == 401
    other = {"Authorization": f"Bearer {token_for('workstations:read')}"}
    assert client.get("/api/v1/medications", params={"q": "doli"}, headers=other).status_code == 403


def test_knowledge_and_interactions_endpoints(
    imported: Result, client: Any, reader: dict[str, str]
) -> None:
    knowledge = client.get("/api/v1/medications/knowledge", headers=reader).json()
    assert knowledge["catalog"].startswith("bdpm-mini#")
    assert knowledge["thesaurus"] == "ansm-2019-09"
    assert 0 < knowledge["coverage"]["marketed_specialities"] <= 1
    found = client.get(
        "/api/v1/medications/interactions",
        params={"atc": ["C01BD01", "C10AA01"], "with_source": "true"},
        headers=reader,
    )
    assert found.status_code == 200, found.text
    items = found.json()
    assert items
    assert items[0]["level"] == "precaution-emploi"
    assert items[0]["source_text"]["conduct"]
    assert items[0]["sources"][0]["edition"] == "2019-09"


def test_interactions_between_specialities_use_substance_codes(
    imported: Result, platform: Platform
) -> None:
    """Warfarin has no ATC code in BDPM, yet COUMADINE + KARDEGIC is found (substances)."""
    coumadine, kardegic = "63245753", "64755969"
    found = interactions_for_specialities(platform.store, [coumadine, kardegic])
    assert found
    assert found[0].level == "contre-indication"
    with pytest.raises(KeyError):
        interactions_for_specialities(platform.store, ["99999999", coumadine])


def test_import_from_url(env: dict[str, str], platform: Platform) -> None:
    """``--url`` downloads the seven files (here from a loopback server) and imports them."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(FIXTURE))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{{name}}"
        result = CliRunner().invoke(main, ["catalog", "import", "--url", url, "--edition", "web"])
        missing = CliRunner().invoke(
            main, ["catalog", "import", "--url", url.replace("{name}", "x/{name}")]
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert "catalog web#" in result.output
    assert _counts(platform)["med_specialities"] == 289
    assert missing.exit_code == 1
    assert "cannot download" in missing.output


def test_public_lookup_by_every_code(imported: Result, platform: Platform) -> None:
    """The functions other services call: one speciality from any code a box carries."""
    from services.medications import lookup, lookup_cis, medications, products, search_catalog

    store = platform.store
    view = lookup(store, DOLIPRANE)
    assert view is not None
    box = next(p for p in view.presentations if p.cip13 == DOLIPRANE_CIP13)
    for code in (
        DOLIPRANE,
        box.cip7,
        DOLIPRANE_CIP13,
        "0" + DOLIPRANE_CIP13,
        f"010{DOLIPRANE_CIP13}17270131\x1d10LOT1",
        f"(01)0{DOLIPRANE_CIP13}",
    ):
        found = lookup(store, code)
        assert found is not None, code
        assert found.cis == DOLIPRANE, code
        assert lookup_cis(store, code) == DOLIPRANE, code
    for unknown in ("99999999", "3400900000000", "doliprane", ""):
        assert lookup(store, unknown) is None, unknown
        assert lookup_cis(store, unknown) is None, unknown
    product = products(store, [DOLIPRANE, "99999999"])
    assert list(product) == [DOLIPRANE]
    assert product[DOLIPRANE].atc == "N02BE01"
    assert [name for _, name in product[DOLIPRANE].substances] == ["PARACÉTAMOL"]
    assert [view.cis for view in medications(store, ["99999999", DOLIPRANE])] == [DOLIPRANE]
    assert DOLIPRANE in [view.cis for view in search_catalog(store, "paracetamol")]
