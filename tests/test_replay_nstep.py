"""Replay buffer: n-step returns at episode ends (termination vs truncation), buffer head, wrap-around, save/load."""

import numpy as np
import pytest

from policies.replay import ReplayBuffer

G = 0.9


def fill(buf, rewards, terms, truncs, env_cols=1):
    """Add a sequence of transitions; obs = step index, next_obs = step index + 0.5 (so we can identify them)."""
    for t, (r, te, tr) in enumerate(zip(rewards, terms, truncs, strict=True)):
        buf.add(np.full((env_cols, 1), t, np.float32), np.zeros((env_cols, 1), np.float32), np.full(env_cols, r),
                np.full((env_cols, 1), t + 0.5, np.float32), np.full(env_cols, te), np.full(env_cols, tr))


def sample_at(buf, t, n):
    """Sample many and pick the rows whose obs is t."""
    b = buf.sample(4096, n_step=n, gamma=G)
    rows = np.flatnonzero(b["obs"][:, 0] == t)
    assert rows.size, f"step {t} never sampled"
    i = rows[0]
    return b["reward"][i], b["next_obs"][i, 0], b["discount"][i]


def test_nstep_stops_at_termination_and_truncation():
    buf = ReplayBuffer(100, 1, 1, seed=0)
    # episode A: steps 0..3, terminates at 3; episode B: 4..6, truncated at 6; episode C: 7..8 (in progress)
    rewards = [1, 2, 3, 4, 10, 20, 30, 100, 200]
    terms = [0, 0, 0, 1, 0, 0, 0, 0, 0]
    truncs = [0, 0, 0, 0, 0, 0, 1, 0, 0]
    fill(buf, rewards, terms, truncs)
    n = 3
    # full n-step inside the episode
    r, nxt, d = sample_at(buf, 0, n)
    assert r == pytest.approx(1 + G * 2 + G**2 * 3) and nxt == 2.5 and d == pytest.approx(G**3)
    # crosses the termination: stop at step 3, no bootstrap
    r, nxt, d = sample_at(buf, 2, n)
    assert r == pytest.approx(3 + G * 4) and nxt == 3.5 and d == 0.0
    r, nxt, d = sample_at(buf, 3, n)
    assert r == pytest.approx(4) and nxt == 3.5 and d == 0.0
    # crosses the truncation: stop at step 6 but bootstrap from its next_obs
    r, nxt, d = sample_at(buf, 5, n)
    assert r == pytest.approx(20 + G * 30) and nxt == 6.5 and d == pytest.approx(G**2)
    # the newest rows: only what has been written is used, then bootstrap
    r, nxt, d = sample_at(buf, 7, n)
    assert r == pytest.approx(100 + G * 200) and nxt == 8.5 and d == pytest.approx(G**2)
    # 1-step: plain transitions
    r, nxt, d = sample_at(buf, 3, 1)
    assert r == 4 and nxt == 3.5 and d == 0.0
    r, nxt, d = sample_at(buf, 6, 1)
    assert r == 30 and nxt == 6.5 and d == pytest.approx(G)


def test_nstep_does_not_cross_the_write_pointer_after_wraparound():
    buf = ReplayBuffer(5, 1, 1, seed=0)
    fill(buf, [1, 1, 1, 1, 1, 1, 1], [0] * 7, [0] * 7)  # rows now hold steps 5, 6, 2, 3, 4; ptr = 2
    assert buf.full and len(buf) == 5
    r, nxt, d = sample_at(buf, 6, 3)  # newest: nothing after it
    assert r == pytest.approx(1) and nxt == 6.5 and d == pytest.approx(G)
    r, nxt, d = sample_at(buf, 4, 3)  # 4 -> 5 -> 6 across the array end
    assert r == pytest.approx(1 + G + G**2) and nxt == 6.5


def test_parallel_envs_do_not_mix():
    buf = ReplayBuffer(20, 1, 1, num_envs=2, seed=0)
    for t in range(4):  # env 0 terminates at t=1; env 1 never
        buf.add(np.array([[t], [10 + t]], np.float32), np.zeros((2, 1), np.float32), np.array([1.0, 2.0]),
                np.array([[t + 0.5], [10 + t + 0.5]], np.float32), np.array([t == 1, False]), np.array([False, False]))
    b = buf.sample(2048, n_step=3, gamma=G)
    for obs, r, nxt in zip(b["obs"][:, 0], b["reward"], b["next_obs"][:, 0], strict=True):
        if obs == 0:
            assert r == pytest.approx(1 + G) and nxt == 1.5
        if obs == 10:
            assert r == pytest.approx(2 * (1 + G + G**2)) and nxt == 12.5


def test_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(50, 3, 2, num_envs=2, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        buf.add(rng.normal(size=(2, 3)), rng.uniform(-1, 1, (2, 2)), rng.normal(size=2), rng.normal(size=(2, 3)),
                rng.random(2) < 0.1, rng.random(2) < 0.1)
    path = tmp_path / "replay.npz"
    buf.save(path)
    assert path.exists() and not list(tmp_path.glob("*.tmp*"))
    other = ReplayBuffer(50, 3, 2, num_envs=2, seed=99)
    other.load(path)
    assert len(other) == len(buf) and other.ptr == buf.ptr and other.full == buf.full
    a, b = buf.sample(64, n_step=3), other.sample(64, n_step=3)  # same RNG state -> same batch
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(ValueError, match="obs_dim"):
        ReplayBuffer(50, 4, 2, num_envs=2).load(path)
