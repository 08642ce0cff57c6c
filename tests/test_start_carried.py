"""START criteria of ``data/start.toml``: merged into the rule set by ``rules.load()``."""

from __future__ import annotations

import msgspec
import pytest

from services.analysis.rules import (
    RuleError,
    RuleSet,
    StoppStartFile,
    _decode,
    load,
    merge_criteria,
)


def test_start_toml_is_merged_into_the_rule_set() -> None:
    rules = load()
    main = _decode("stopp_start.toml", StoppStartFile)
    extra = _decode("start.toml", StoppStartFile)
    ids = [c.id for c in rules.stopp_start.criterion]
    assert ids == [c.id for c in main.criterion] + [c.id for c in extra.criterion]
    skipped = [n.id for n in rules.stopp_start.not_encoded]
    assert skipped == [n.id for n in main.not_encoded] + [n.id for n in extra.not_encoded]
    assert rules.versions()["stopp_start"] == f"{main.version}+{extra.version}"


def test_an_id_in_both_files_is_a_load_error() -> None:
    rules = load()
    main = _decode("stopp_start.toml", StoppStartFile)
    start = next(c for c in main.criterion if c.kind == "start")
    clash = msgspec.structs.replace(main, criterion=(start,), not_encoded=())
    with pytest.raises(RuleError, match="duplicate ids"):
        RuleSet(
            merge_criteria(main, clash),
            rules.acb,
            rules.renal,
            rules.redundancy,
            rules.adherence,
        )
