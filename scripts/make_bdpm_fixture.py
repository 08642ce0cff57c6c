"""Cut the small BDPM subset the tests use out of the real files (``tests/fixtures/bdpm-mini``).

The tests need real lines (real encodings, trailing tabs, CRLF, thousands commas in prices,
shortages, generic groups, specialities with and without an ATC code) but must stay fast,
so this keeps a few hundred specialities: named ones the tests talk about, every member of
their generic groups, and a deterministic sample of the rest. Lines are copied byte for
byte. Run from the repository root:

    python scripts/make_bdpm_fixture.py [--source ../shared/data/bdpm-2025-07]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "bdpm-2025-07"
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "bdpm-mini"
FILES = (
    "CIS_bdpm",
    "CIS_CIP_bdpm",
    "CIS_COMPO_bdpm",
    "CIS_GENER_bdpm",
    "CIS_CPD_bdpm",
    "CIS_CIP_Dispo_Spec",
    "CIS_MITM",
)
NAMED = re.compile(
    r"^(DOLIPRANE 1000 mg, comprimé|KARDEGIC 75|AMLODIPINE BIOGARAN 5 mg|PREVISCAN|COUMADINE 5"
    r"|CLARITHROMYCINE BIOGARAN 500 mg, comprimé pelliculé$|SIMVASTATINE BIOGARAN 20"
    r"|LEVOTHYROX 100|AMIODARONE BIOGARAN 200|CORDARONE 200|CELEBREX 200|DIGOXINE NATIVELLE"
    r"|METHOTREXATE ACCORD 2,5|ISOPTINE 120|ATORVASTATINE BIOGARAN 10|TAHOR 10|XARELTO 20"
    r"|ELIQUIS 5|RIFADINE 300|TIMOPTOL 0,50|TIMOLOL|LAMALINE|MIANSERINE)"
)
SAMPLE_EVERY = 211


def _cis(line: bytes) -> bytes:
    return line.split(b"\t", 1)[0]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def select(source: Path) -> set[bytes]:
    """The CIS to keep: named products, a sample, shortages, and their generic groups."""
    named: set[bytes] = set()
    keep: set[bytes] = set()
    for index, line in enumerate(_lines(source / "CIS_bdpm.txt")):
        fields = line.decode("utf-8").split("\t")
        if NAMED.match(fields[1]):
            named.add(_cis(line))
        if index % SAMPLE_EVERY == 0 or ("Oui" in fields[-1] and index % 23 == 0):
            keep.add(_cis(line))  # a sample, and a few under « surveillance renforcée »
    for index, line in enumerate(_lines(source / "CIS_CIP_Dispo_Spec.txt")):
        if index % 60 == 0:
            keep.add(_cis(line))
    groups: dict[bytes, set[bytes]] = {}
    for line in _lines(source / "CIS_GENER_bdpm.txt"):
        if line.strip():
            group, _, cis = line.split(b"\t")[:3]
            groups.setdefault(group, set()).add(cis)
    for members in groups.values():
        if members & named:
            keep |= members
    return keep | named | _donors(source, named)


def _donors(source: Path, named: set[bytes]) -> set[bytes]:
    """Two CIS_MITM specialities with the same substances as each named one.

    Without them the named products would get no ATC code in the subset, whereas the full
    import gives them one by propagation.
    """
    substances: dict[bytes, set[bytes]] = {}
    for line in _lines(source / "CIS_COMPO_bdpm.txt"):
        fields = line.split(b"\t")
        if len(fields) > 2:
            substances.setdefault(fields[0], set()).add(fields[2])
    with_atc = [_cis(line) for line in _lines(source / "CIS_MITM.txt")]
    donors: set[bytes] = set()
    for cis in sorted(named):
        wanted = substances.get(cis)
        found = [c for c in with_atc if wanted and substances.get(c) == wanted][:2]
        donors.update(found)
    return donors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    keep = select(args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        lines = _lines(args.source / f"{name}.txt")
        if name == "CIS_GENER_bdpm":
            # whole groups, withdrawn members included, as in the real file
            groups = {
                line.split(b"\t")[0]
                for line in lines
                if line.split(b"\t")[2:3] and line.split(b"\t")[2] in keep
            }
            kept = [line for line in lines if line.strip() and line.split(b"\t")[0] in groups]
        else:
            kept = [line for line in lines if line.strip() and _cis(line) in keep]
        (args.out / f"{name}.txt").write_bytes(b"".join(kept))
        print(f"{name}.txt: {len(kept)} lines")


if __name__ == "__main__":
    main()
