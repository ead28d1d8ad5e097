"""QC's re-synthesizer, for real: a corrected sample is re-synthesized on its video and re-verified by OCR.

No stub: :func:`make_resynthesizer` runs curation's trajectory synthesizer with the real OCR model, on the shards'
recorded view. A correction that the pixels support yields a verified trajectory answering the corrected answer;
one they do not support yields no trajectory (the pull then rejects the sample).
"""

from __future__ import annotations

from tests.conftest import SampleRun
from videor4.contracts.shard_io import read_manifest, read_stage
from videor4.contracts.shard_schema import CoTRow
from videor4.contracts.tool_protocol import extract_answer
from videor4.curation.sample import sample_root
from videor4.pipelines.qc_flows import make_resynthesizer, shards_view


def _crop_row(sample_run: SampleRun) -> CoTRow:
    rows = [r for r in read_stage(sample_run.shards, "drp") if isinstance(r, CoTRow) and r.ops[:1] == ["crop"]]
    assert rows, "the sample run yields DRP crop trajectories"
    return rows[0]


def test_a_supported_correction_is_resynthesized_and_verified(sample_run: SampleRun) -> None:
    row = _crop_row(sample_run)
    view = shards_view(sample_run.shards)
    assert view is not None and view.model_dump() == read_manifest(sample_run.shards)["view"]
    resynthesize = make_resynthesizer(sample_root(), view)
    answer = row.answers[0]
    fixed = row.model_copy(update={"answers": [answer], "messages": [], "verified": False})
    redone = resynthesize(fixed, answer, list(row.evidence))
    assert redone is not None and redone.verified and redone.messages
    assert extract_answer(redone.messages[-1].text).lower() == answer.lower()
    assert redone.initial_frames == row.initial_frames  # same view: same initial frames as the rest of the shard


def test_a_correction_the_pixels_do_not_show_is_not_verified(sample_run: SampleRun) -> None:
    row = _crop_row(sample_run)
    resynthesize = make_resynthesizer(sample_root(), shards_view(sample_run.shards))
    wrong = "QUARTZ 4821"  # appears nowhere in the bundled videos
    fixed = row.model_copy(update={"answers": [wrong]})
    assert resynthesize(fixed, wrong, list(row.evidence)) is None
