import numpy as np
import pytest

from recgym.data.synthetic import SyntheticConfig, generate_world
from recgym.metrics import fallback_predictions


@pytest.fixture(scope="module")
def world():
    return generate_world()


def test_world_is_deterministic_and_seeded():
    a, b = generate_world(SyntheticConfig(num_users=30, seed=4)), generate_world(SyntheticConfig(num_users=30, seed=4))
    c = generate_world(SyntheticConfig(num_users=30, seed=5))
    assert np.array_equal(a.dataset.ratings, b.dataset.ratings)
    assert list(a.dataset.review_texts) == list(b.dataset.review_texts)
    assert not np.array_equal(a.dataset.ratings[:50], c.dataset.ratings[:50])


def test_ratings_are_integers_on_the_scale_with_timestamps(world):
    r = world.dataset.ratings
    assert set(np.unique(r)) <= {1, 2, 3, 4, 5} and len(np.unique(r)) == 5
    assert (world.dataset.timestamps > 0).all()


def test_reading_the_history_pays(world):
    """Oracle < user average < global mean, in MAE on the test split of the default world."""
    ds = world.dataset
    y = ds.targets("test")
    user_avg, item_avg = ds.prior_averages("test")
    user_baseline = fallback_predictions(user_avg, item_avg, ds.train_mean())
    oracle_mae = np.abs(world.oracle_for("test") - y).mean()
    user_mae = np.abs(user_baseline - y).mean()
    global_mae = np.abs(ds.train_mean() - y).mean()
    assert oracle_mae < 0.6 * user_mae
    assert user_mae < global_mae


def test_reviews_agree_with_ratings(world):
    ds = world.dataset
    for row in range(0, len(ds.ratings), 37):
        review, rating = ds.review_texts[row], ds.ratings[row]
        if rating == 5:
            assert review.startswith("Outstanding")
        if rating == 1:
            assert review.startswith("Very disappointing")


def test_description_states_the_attributes(world):
    ds = world.dataset
    assert all(" restaurant with a " in d for d in ds.item_descriptions)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least"):
        generate_world(SyntheticConfig(num_items=1))
