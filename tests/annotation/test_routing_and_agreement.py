"""Pure parts of QC: routing is deterministic per sample, agreement statistics match textbook values."""

from __future__ import annotations

import pytest

from videor4.annotation.routing import RoutingConfig, route, uncertainty
from videor4.annotation.verdicts import cohen_kappa, fleiss_kappa


def test_fleiss_kappa_matches_the_wikipedia_example():
    # Fleiss (1971) worked example from Wikipedia: 10 subjects, 14 raters, 5 categories → κ ≈ 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[str(c) for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa([["accept", "accept"], ["reject", "reject"]]) == pytest.approx(1.0)
    assert fleiss_kappa([["accept", "accept"]]) is None  # one category: undefined, not 1 or 0


def test_cohen_kappa_known_value():
    # 50 items: both yes 20, both no 15, a-yes/b-no 5, a-no/b-yes 10 → p_o = 0.7, p_e = 0.5 → κ = 0.4
    a = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    b = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["y"], ["y"]) is None


def test_routing_is_stable_per_sample_and_respects_reviewed(make_sample_shards, tmp_path):
    rows = make_sample_shards(tmp_path / "shards", tmp_path)
    cfg = RoutingConfig(threshold=0.8, audit_fraction=0.5, seed=3)
    full = route(rows, cfg)
    assert set(full.low_confidence) == {r.sample_id for r in rows if uncertainty(r) > 0.2}
    assert [full.scores[s] for s in full.low_confidence] == [0.9, 0.6, 0.5]  # most doubtful first
    assert len(full.low_confidence) == 3 and len(full.audit) + len(full.auto_pass) == 2
    # a sample's fate does not depend on which other samples are routed with it
    for r in rows:
        alone = route([r], cfg)
        assert (r.sample_id in alone.to_humans) == (r.sample_id in full.to_humans)
    # everything is audited at fraction 1; nothing at 0
    assert not route(rows, cfg.model_copy(update={"audit_fraction": 1.0})).auto_pass
    assert not route(rows, cfg.model_copy(update={"audit_fraction": 0.0})).audit
    reviewed = rows[0].model_copy(update={"qc": rows[0].qc.model_copy(update={"status": "human_accept"})})
    assert route([reviewed], cfg).already == [reviewed.sample_id]
    unverified = rows[3].model_copy(update={"verified": False})
    assert uncertainty(unverified) == 1.0
