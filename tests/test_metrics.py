import math

import numpy as np
import pytest

from recgym.data.schema import RatingScale
from recgym.metrics import fallback_predictions, rating_metrics


def test_unparsed_predictions_use_the_fallback_not_perfection():
    m = rating_metrics(
        targets=[5, 1, 3, 4], predictions=[5, None, float("nan"), 9], fallbacks=[3, 3, 3, 3],
        scale=RatingScale(1, 5), format_ok=[True, False, False, False], rewards=[1.5, -0.5, -0.5, 0.5],
    )
    # errors: 0, |1-3|=2 (fallback), |3-3|=0 (fallback), |4-5|=1 (clipped)
    assert m.mae == pytest.approx(3 / 4)
    assert m.rmse == pytest.approx(math.sqrt(5 / 4))
    assert m.mae_parsed == pytest.approx(1 / 2)
    assert m.coverage == 0.5 and m.format_rate == 0.25 and m.mean_reward == pytest.approx(0.25)
    assert m.scale == "1-5" and "user average" in m.fallback


def test_nothing_parsed():
    m = rating_metrics([1, 2], [None, None], [2, 2], RatingScale())
    assert m.coverage == 0 and math.isnan(m.mae_parsed) and m.mae == 0.5


def test_fallback_order():
    fb = fallback_predictions(np.array([4.0, np.nan, np.nan]), np.array([2.0, 3.0, np.nan]), 3.5)
    assert fb.tolist() == [4.0, 3.0, 3.5]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="length"):
        rating_metrics([1, 2], [1], [1, 1], RatingScale())
