"""Typed findings: one constructor per type, each type's severity, one JSON form."""

from __future__ import annotations

import json

import pytest

from inspector import finding as fm
from inspector.finding import FINDING_KINDS, FINDING_TYPES, SEVERITIES, Finding
from inspector.report.export import jsonable

CONSTRUCTED = {
    "nan": fm.nan_finding("a.weight", 3),
    "inf": fm.inf_finding("a.weight", 2),
    "zero": fm.zero_finding("a.weight"),
    "tied": fm.tied_finding("head.weight", "embed.weight"),
    "dead_relu": fm.dead_relu_finding("conv.weight", 3, 8),
    "outlier": fm.outlier_finding("l3", "Conv2d", 6, "negative fraction", "90% vs median 50%", 4.25),
    "lambda": fm.lambda_finding("model/lam", "lambda"),
    "custom_object": fm.custom_object_finding("model/x", "custom object 'X'"),
    "unsafe": fm.unsafe_finding("posix.system", "dangerous"),
    "scan_incomplete": fm.scan_incomplete_finding("m.pt", "scan stopped: more than 10000000 pickle opcodes"),
    "alpha": fm.alpha_finding("fc.weight", 7.5),
}


def test_every_type_has_one_constructor_and_a_severity():
    assert set(CONSTRUCTED) == set(FINDING_TYPES) == set(FINDING_KINDS)
    for name, f in CONSTRUCTED.items():
        assert isinstance(f, Finding) and f.type == name
        assert f.severity == FINDING_KINDS[name][0] and f.severity in SEVERITIES
        assert f.subject and f.detail


@pytest.mark.parametrize("name", sorted(CONSTRUCTED))
def test_json_form_names_the_subject_once(name):
    d = json.loads(json.dumps(jsonable([CONSTRUCTED[name]])))[0]
    assert list(d)[:4] == ["type", "subject", "severity", "detail"]
    assert not {"tensor", "layer", "global"} & set(d)


def test_a_duplicate_member_is_an_unsafe_finding_of_its_own_class():
    f = fm.duplicate_member_finding("archive/data.pkl")
    assert (f.type, f.subject, f.data) == ("unsafe", "archive/data.pkl", {"class": "duplicate"})


def test_type_figures_ride_along():
    assert CONSTRUCTED["outlier"].to_dict()["z"] == 4.25
    assert CONSTRUCTED["outlier"].detail.endswith("(robust z +4.2)")
    assert CONSTRUCTED["unsafe"].to_dict()["class"] == "dangerous"
    assert CONSTRUCTED["unsafe"].detail == "pickle imports dangerous global posix.system"


def test_an_unknown_type_is_refused():
    with pytest.raises(KeyError):
        fm.finding("bogus", "x", "y")
