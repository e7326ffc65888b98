"""The reward-term interface: combinators, running normalisation, building from config, relabelling."""

import numpy as np
import pytest

from common.spec import flatten_state, unflatten_state
from policies.toy_env import point_reach_spec
from rewards import (
    Normalize,
    RewardConfigError,
    RewardOutput,
    RewardTerm,
    Transitions,
    build,
    register,
    relabel,
)


class Linear(RewardTerm):
    """reward = w . next position; success when x > 0.5."""

    name = "linear"
    requires = ("position",)

    def __init__(self, w=(1.0, 0.0)):
        self.w = np.asarray(w)
        self.calls = 0

    def compute(self, batch):
        self.calls += 1
        p = batch.next_obs["position"]
        return RewardOutput(p @ self.w, {"x": p[:, 0]}, success=p[:, 0] > 0.5)


@register("test_linear")
def _build_linear(params, spec):
    return Linear(**params)


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    pos, nxt = rng.uniform(-1, 1, (n, 2)), rng.uniform(-1, 1, (n, 2))
    goal = np.zeros((n, 2))
    return Transitions(obs={"position": pos, "goal": goal}, action=rng.uniform(-1, 1, (n, 2)),
                       next_obs={"position": nxt, "goal": goal}, env_reward=-np.linalg.norm(nxt, axis=1),
                       episode_step=np.arange(n))


def test_weighted_sum_and_sparse_override():
    b = batch()
    term = build({"kind": "sum", "params": {"terms": {
        "lin": {"kind": "test_linear", "weight": 2.0, "params": {"w": [1.0, 1.0]}},
        "task": {"kind": "task", "weight": 0.5}}}})
    out = term(b)
    p = b.next_obs["position"]
    np.testing.assert_allclose(out.reward, 2 * p.sum(1) + 0.5 * b.env_reward, rtol=1e-6)
    np.testing.assert_allclose(out.components["lin/x"], p[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(out.success, p[:, 0] > 0.5)  # the only success-detecting member

    # KAGI: the sparse reward where it is non-zero, else the dense one
    over = build({"kind": "sparse_override", "params": {
        "sparse": {"kind": "test_linear", "params": {"w": [0.0, 0.0]}},  # always 0: never fires
        "dense": {"kind": "task"}}})
    np.testing.assert_allclose(over(b).reward, b.env_reward, rtol=1e-6)
    over = build({"kind": "sparse_override", "params": {
        "sparse": {"kind": "test_linear", "params": {"w": [1.0, 0.0]}}, "dense": {"kind": "task"}}})
    fired = p[:, 0] != 0
    np.testing.assert_allclose(over(b).reward, np.where(fired, p[:, 0], b.env_reward), rtol=1e-6)


def test_normalize_tracks_running_statistics_and_freezes():
    norm = build({"kind": "test_linear", "normalize": {"center": True, "clip": None}})
    assert isinstance(norm, Normalize)
    seen = []
    for s in range(5):
        b = batch(7, seed=s)
        seen.append(b.next_obs["position"][:, 0])
        norm(b)
    x = np.concatenate(seen)
    assert norm.count == len(x)
    assert norm.mean == pytest.approx(x.mean()) and norm.std == pytest.approx(x.std())
    # frozen (relabelling / monitoring): statistics stay, output uses them
    b = batch(4, seed=99)
    out = relabel(norm, b)
    assert norm.count == len(x)
    np.testing.assert_allclose(out.reward, (b.next_obs["position"][:, 0] - x.mean()) / (x.std() + 1e-8), rtol=1e-5)
    clone = build({"kind": "test_linear", "normalize": True})
    clone.load_state_dict(norm.state_dict())
    clone.train_mode(False)
    np.testing.assert_allclose(clone(b).reward, out.reward, rtol=1e-6)


def test_relabel_in_chunks_equals_one_call():
    b = batch(25)
    term = Linear()
    whole = term(b)
    chunked = relabel(term, b, chunk=4)
    np.testing.assert_allclose(chunked.reward, whole.reward)
    np.testing.assert_array_equal(chunked.success, whole.success)
    assert term.calls == 1 + 7


def test_build_errors_name_the_key():
    with pytest.raises(RewardConfigError, match=r"reward.kind='clipp'.*allowed: .*clip.*keypoints.*task"):
        build({"kind": "clipp"})
    with pytest.raises(RewardConfigError, match="reward.kind is missing"):
        build({"params": {}})
    with pytest.raises(RewardConfigError, match="takes no params"):
        build({"kind": "task", "params": {"x": 1}})
    with pytest.raises(RewardConfigError, match=r"reward.params.terms.a \(kind 'test_linear'\).*unexpected keyword"):
        build({"kind": "sum", "params": {"terms": {"a": {"kind": "test_linear", "params": {"bogus": 1}}}}})
    with pytest.raises(RewardConfigError, match="reward.params.dense must be a term config"):
        build({"kind": "sparse_override", "params": {"sparse": {"kind": "task"}}})


def test_bind_names_missing_observations():
    spec = point_reach_spec()

    class NeedsCamera(Linear):
        requires = ("image_front",)

    build({"kind": "test_linear"}, spec)  # position exists: fine
    with pytest.raises(RewardConfigError, match=r"reads \['image_front'\].*task.kwargs.cameras"):
        NeedsCamera().bind(spec)
    with pytest.raises(ValueError, match="returned .* rewards for 6"):
        class Wrong(Linear):
            def compute(self, batch):
                return RewardOutput(np.zeros(3))
        Wrong()(batch())


def test_transitions_select_concat_and_unflatten():
    b = batch(5)
    both = Transitions.concat([b.select(slice(0, 2)), b.select(np.array([2, 3, 4]))])
    np.testing.assert_array_equal(both.next_obs["position"], b.next_obs["position"])
    np.testing.assert_array_equal(both.episode_step, b.episode_step)
    no_gt = Transitions(obs=b.obs, action=b.action, next_obs=b.next_obs)
    assert Transitions.concat([b, no_gt]).env_reward is None  # ground truth only where every part has it
    spec = point_reach_spec()
    flat = flatten_state(spec, b.obs)
    back = unflatten_state(spec, flat)
    np.testing.assert_allclose(back["position"], b.obs["position"], rtol=1e-6)
    np.testing.assert_array_equal(flatten_state(spec, back), flat)
