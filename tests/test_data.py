"""Tests for mbrl_bayes.data.ReplayBuffer."""

import os

import numpy as np
import pytest

from mbrl_bayes.data import FIELDS, ReplayBuffer

OBS_DIM, ACT_DIM = 3, 2


def _trajectory(start: int, n: int, episode_length: int | None = None):
    """``n`` consecutive transitions whose obs encode the global step ``start + i``.

    ``next_obs[i] == obs[i + 1]`` within an episode; an episode ends (truncated) every
    ``episode_length`` steps, after which obs jumps (a reset).
    """
    steps = np.arange(start, start + n)
    obs = np.repeat(steps[:, None], OBS_DIM, axis=1).astype(np.float32)
    next_obs = obs + 1.0
    truncated = np.zeros(n, dtype=bool)
    if episode_length is not None:
        truncated = (steps + 1) % episode_length == 0
        next_obs[truncated] += 1000.0  # final obs is not the next episode's first obs
    act = np.stack([steps, -steps], axis=1).astype(np.float32)
    reward = steps.astype(np.float32)
    return obs, act, next_obs, reward, np.zeros(n, dtype=bool), truncated


def _filled(capacity: int, n: int, episode_length: int | None = None) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity, OBS_DIM, ACT_DIM)
    buffer.add(*_trajectory(0, n, episode_length))
    return buffer


def test_add_single_and_batch_in_order():
    buffer = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    obs, act, next_obs, reward, terminated, truncated = _trajectory(0, 4)
    buffer.add(obs[0], act[0], next_obs[0], reward[0], terminated[0], truncated[0])
    buffer.add(obs[1:], act[1:], next_obs[1:], reward[1:], terminated[1:], truncated[1:])
    assert len(buffer) == 4
    data = buffer.get_all()
    assert set(data) == set(FIELDS)
    np.testing.assert_array_equal(data["obs"], obs)
    np.testing.assert_array_equal(data["act"], act)
    np.testing.assert_array_equal(data["reward"], reward)
    assert data["obs"].dtype == np.float32 and data["terminated"].dtype == bool


def test_ring_wraps_oldest_first():
    buffer = ReplayBuffer(5, OBS_DIM, ACT_DIM)
    buffer.add(*_trajectory(0, 3))
    buffer.add(*_trajectory(3, 4))  # 7 added, capacity 5: keeps steps 2..6
    assert len(buffer) == 5 and buffer.num_added == 7 and buffer.position == 2
    np.testing.assert_array_equal(buffer.as_dict()["reward"], [2, 3, 4, 5, 6])
    buffer.add(*_trajectory(7, 12))  # batch larger than capacity: keeps the newest 5
    np.testing.assert_array_equal(buffer.as_dict()["reward"], [14, 15, 16, 17, 18])
    np.testing.assert_array_equal(buffer.take(np.array([[0, 4]]))["reward"], [[14, 18]])


def test_sample_bootstrap_split():
    buffer = _filled(8, 6)
    rng = np.random.default_rng(0)
    batch = buffer.sample(rng, 32)
    assert batch["obs"].shape == (32, OBS_DIM) and batch["act"].shape == (32, ACT_DIM)
    np.testing.assert_array_equal(batch["obs"][:, 0], batch["reward"])  # rows stay aligned
    assert set(batch["reward"].astype(int)) <= set(range(6))

    indices = buffer.bootstrap_indices(rng, 4)
    assert indices.shape == (4, 6) and indices.min() >= 0 and indices.max() < 6
    assert not all(np.array_equal(indices[0], row) for row in indices[1:])  # independent
    assert buffer.bootstrap_indices(rng, 2, size=9).shape == (2, 9)
    assert buffer.take(indices)["obs"].shape == (4, 6, OBS_DIM)

    train, holdout = buffer.split(rng, 0.34)
    assert len(holdout) == 2 and len(train) == 4
    np.testing.assert_array_equal(np.sort(np.concatenate([train, holdout])), np.arange(6))
    train, holdout = buffer.split(rng, 0.0)
    assert len(holdout) == 0 and len(train) == 6
    train, holdout = buffer.split(rng, 0.5, max_holdout=2)  # round(3) capped at 2
    assert len(holdout) == 2 and len(train) == 4

    # A bootstrap of the training part only: every index is a training index.
    indices = buffer.bootstrap_indices(rng, 3, indices=train)
    assert indices.shape == (3, 4) and set(indices.ravel()) <= set(train)
    with pytest.raises(ValueError, match="non-empty 1-D integer array"):
        buffer.bootstrap_indices(rng, 3, indices=np.zeros(0, int))


def test_episodes_and_sequences_never_cross_boundaries():
    # Episodes of length 4 over steps 0..13 in a ring of 10;
    # plus an unflagged reset (discontinuity) between step 13 and a new stream at 100.
    buffer = _filled(10, 14, episode_length=4)  # keeps steps 4..13
    np.testing.assert_array_equal(buffer.episode_starts(), [0, 4, 8])
    buffer.add(*_trajectory(100, 2))  # keeps steps 6..13, 100, 101
    np.testing.assert_array_equal(buffer.as_dict()["reward"][[0, -1]], [6, 101])
    # stored steps: 6 7 | 8 9 10 11 | 12 13 | 100 101
    np.testing.assert_array_equal(buffer.episode_starts(), [0, 2, 6, 8])
    np.testing.assert_array_equal(buffer.episode_lengths(), [2, 4, 2, 2])
    np.testing.assert_array_equal(buffer.sequence_starts(3), [2, 3])

    seqs = buffer.sample_sequences(np.random.default_rng(1), 16, 3)
    assert seqs["obs"].shape == (16, 3, OBS_DIM) and seqs["reward"].shape == (16, 3)
    steps = seqs["reward"]
    np.testing.assert_array_equal(np.diff(steps, axis=1), 1)  # contiguous
    assert np.all((steps[:, 0] >= 8) & (steps[:, -1] <= 11))  # inside the 4-step episode
    np.testing.assert_array_equal(seqs["next_obs"][:, :-1], seqs["obs"][:, 1:])

    with pytest.raises(ValueError, match="no stored episode has 5 contiguous steps"):
        buffer.sample_sequences(np.random.default_rng(0), 2, 5)

    # Holdout splits of windows: a partition of the valid window starts.
    train, holdout = buffer.split(np.random.default_rng(2), 0.5, sequence_length=3)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, holdout])), [2, 3])
    assert len(holdout) == 1
    np.testing.assert_array_equal(ReplayBuffer.window_indices(np.array([2, 3]), 3),
                                  [[2, 3, 4], [3, 4, 5]])
    with pytest.raises(ValueError, match="no stored episode has 5 contiguous steps"):
        buffer.split(np.random.default_rng(0), 0.5, sequence_length=5)


def test_save_load_round_trip(tmp_path):
    buffer = ReplayBuffer(5, OBS_DIM, ACT_DIM, act_dtype=np.int32)
    obs, act, next_obs, reward, terminated, truncated = _trajectory(0, 7, episode_length=3)
    terminated[1] = True
    buffer.add(obs, act.astype(np.int32), next_obs, reward, terminated, truncated)
    path = tmp_path / "buffer.npz"
    buffer.save(path)
    assert os.listdir(tmp_path) == ["buffer.npz"]  # no temporary file left behind
    loaded = ReplayBuffer.load(path)
    assert (loaded.capacity, loaded.position, len(loaded), loaded.num_added) == (5, 2, 5, 7)
    for name in FIELDS:
        np.testing.assert_array_equal(loaded.as_dict()[name], buffer.as_dict()[name])
        np.testing.assert_array_equal(loaded._storage[name], buffer._storage[name])
        assert loaded.as_dict()[name].dtype == buffer.as_dict()[name].dtype
    # Keeps working as a ring after loading, exactly like the original.
    for b in (buffer, loaded):
        b.add(*_trajectory(50, 1))
    np.testing.assert_array_equal(loaded.as_dict()["obs"], buffer.as_dict()["obs"])

    empty_path = tmp_path / "empty.npz"
    ReplayBuffer(3, OBS_DIM, ACT_DIM).save(empty_path)
    empty = ReplayBuffer.load(empty_path)
    assert len(empty) == 0 and empty.capacity == 3 and empty.obs_dim == OBS_DIM


def test_load_rejects_files_that_are_not_buffers(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="is not a saved ReplayBuffer"):
        ReplayBuffer.load(other)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a saved ReplayBuffer"):
        ReplayBuffer.load(text)
    with pytest.raises(FileNotFoundError):
        ReplayBuffer.load(tmp_path / "missing.npz")


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        ReplayBuffer(0, OBS_DIM, ACT_DIM)
    buffer = ReplayBuffer(4, OBS_DIM, ACT_DIM)
    obs, act, next_obs, reward, terminated, truncated = _trajectory(0, 3)
    with pytest.raises(ValueError, match="the buffer is empty"):
        buffer.sample(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match=r"act has shape \(3, 3\)"):
        buffer.add(obs, np.zeros((3, 3)), next_obs, reward, terminated, truncated)
    with pytest.raises(ValueError, match=r"obs has shape \(2,\)"):
        buffer.add(obs[0, :2], act[0], next_obs[0], reward[0], False, False)
    with pytest.raises(ValueError, match="batch lengths differ"):
        buffer.add(obs, act, next_obs, reward[:2], terminated, truncated)
    bad = next_obs.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="next_obs contains NaN or inf"):
        buffer.add(obs, act, bad, reward, terminated, truncated)
    with pytest.raises(ValueError, match="terminated must be boolean"):
        buffer.add(obs, act, next_obs, reward, np.full(3, 0.5), truncated)
    assert len(buffer) == 0  # rejected adds change nothing
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        _filled(4, 2).sample(0, 1)
