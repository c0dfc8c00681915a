"""The committed keyword spotters score the held-out espeak-ng voices exactly as their cards say."""

from __future__ import annotations

import numpy as np
import pytest

from server.kws.checkpoint import load_kws_model
from server.kws.data import KWSDataConfig, scored_set
from server.kws.evaluate import evaluate
from server.paths import REPO_MODELS


@pytest.mark.parametrize("name", ["kws_dscnn", "kws_dscnn_wide"])
def test_a_committed_spotter_scores_its_held_out_voices_as_recorded(name: str) -> None:
    """The 480 held-out clips rebuilt from the checkpoint's data record (espeak-ng, rendered afresh) give the
    recorded accuracy and confusion, to two clips (another CPU's float sums may tip a clip at a tie): the file, its
    front end and the data the card describes agree."""
    checkpoint = REPO_MODELS / "kws" / f"{name}.safetensors"
    if not checkpoint.exists():
        pytest.skip(f"{checkpoint.name} is not in this checkout")
    model, meta = load_kws_model(checkpoint)
    waves, labels = scored_set(KWSDataConfig.from_meta(meta["data"]), 0, False)
    result = evaluate(model, waves, labels)
    assert len(labels) == meta["data"]["heldout_clips"]
    moved = np.abs(np.asarray(result.confusion) - np.asarray(meta["metrics"]["heldout_clean_confusion"])).sum()
    assert moved <= 4, f"{moved // 2} clips scored otherwise than recorded"
    assert abs(result.accuracy - meta["metrics"]["heldout_clean_accuracy"]) <= 2 / len(labels)
