"""Keypoint (KAGI) reward: camera model against MuJoCo, progress along expert trajectories, the
reward's algebra (override, shaping), relabel consistency and config errors."""

from __future__ import annotations

import functools
from pathlib import Path

import mujoco
import numpy as np
import pytest

import rewards
import sim
from common.spec import ActionSpec, EmbodimentSpec, ObsField
from rewards.base import RewardConfigError, RewardOutput, RewardTerm, Transitions, register, relabel
from rewards.keypoints import (
    CameraKeypoints,
    CameraModel,
    KeypointReward,
    SimKeypoints,
    Waypoint,
    load_waypoints,
    render_rgbd,
)
from sim.panda.experts import make_expert

TASKS = {  # env id, steps per test episode (the experts succeed well within these)
    "reach": ("rewardforge/PandaReach-v0", 30),
    "push": ("rewardforge/PandaPush-v0", 60),
    "pick_place": ("rewardforge/PandaPickPlace-v0", 60),
    "drawer_open": ("rewardforge/PandaDrawerOpen-v0", 40),
}


@functools.cache
def _env(task: str):
    return sim.make(TASKS[task][0])


@functools.cache
def rollout(task: str, seed: int, policy: str) -> tuple[Transitions, np.ndarray]:
    """One episode as a Transitions batch (with env success), and the env's success per step."""
    env = _env(task)
    obs, _ = env.reset(seed=seed)
    expert = make_expert(env)
    expert.reset()
    rng = np.random.default_rng(seed)
    o, a, n, succ, env_r, term = [], [], [], [], [], []
    for _ in range(TASKS[task][1]):
        act = expert(obs) if policy == "expert" else rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        nxt, r, te, _, info = env.step(act)
        o.append(obs), a.append(act), n.append(nxt), succ.append(info["success"]), env_r.append(r), term.append(te)
        obs = nxt

    def stack(ds):
        return {k: np.stack([d[k] for d in ds]) for k in ds[0]}

    batch = Transitions(stack(o), np.stack(a), stack(n), env_reward=np.array(env_r, np.float32),
                        success=np.array(succ), info={"terminated": np.array(term)})
    return batch, np.array(succ)


def term_for(task: str, **params) -> KeypointReward:
    return rewards.build({"kind": "keypoints", "params": {"gamma": 0.99, **params}}, _env(task).unwrapped.embodiment)


# ---------------------------------------------------------------------------
# camera model vs MuJoCo


def test_camera_projection_and_backprojection_match_mujoco():
    env = _env("push")
    env.reset(seed=3)
    m, d = env.unwrapped.model, env.unwrapped.data
    W, H = 320, 240
    rgb, depth, cam = render_rgbd(m, d, "front", W, H)
    assert rgb.shape == (H, W, 3) and depth.shape == (H, W)

    # Projection: the block centre lands on red block pixels (row 0 = top of the image).
    obj = d.site("object").xpos.copy()
    uv, z = cam.project(obj)
    assert cam.in_image(uv) and z > 0
    r, g, b = rgb[int(uv[1]), int(uv[0])].astype(int)
    assert r > 150 and g < 110 and b < 110, (r, g, b)

    # Back-projection with MuJoCo depth: the surface point where the camera ray through the
    # block centre first hits (mj_ray), to within a few mm.
    ray = (obj - cam.position) / np.linalg.norm(obj - cam.position)
    geom = np.zeros(1, np.int32)
    hit = cam.position + mujoco.mj_ray(m, d, cam.position, ray, None, 1, -1, geom) * ray
    assert m.geom(int(geom[0])).name == "object"
    p = cam.backproject(uv, cam.sample_depth(depth, uv))
    assert np.linalg.norm(p - hit) < 0.003
    # the same through the reward's camera source (pixels + a depth image, batched)
    src = CameraKeypoints(cam, ["object"], "uv", "depth")
    got = src.positions({"uv": uv[None, None], "depth": depth[None], "ee_pos": np.zeros((1, 3))}, ["object"])
    assert np.linalg.norm(got["object"][0] - hit) < 0.003

    # Every pixel of the table top back-projects onto the plane z = 0.
    r_seg = mujoco.Renderer(m, H, W)
    r_seg.enable_segmentation_rendering()
    r_seg.update_scene(d, camera="front")
    seg = r_seg.render().copy()
    r_seg.close()
    vv, uu = np.mgrid[0:H, 0:W]
    pts = cam.backproject(np.stack([uu + 0.5, vv + 0.5], -1), depth)
    table = (seg[..., 0] == m.geom("table").id) & (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM))
    top = table & (np.abs(pts[..., 0] - 0.35) < 0.74) & (np.abs(pts[..., 1]) < 0.74)
    assert top.sum() > 0.2 * H * W
    assert np.quantile(np.abs(pts[top][:, 2]), 0.99) < 0.004

    # Round trip is exact, and points behind the camera show up as non-positive depth.
    q = np.array([[0.5, 0.1, 0.05], [0.3, -0.2, 0.3]])
    uv2, z2 = cam.project(q)
    np.testing.assert_allclose(cam.backproject(uv2, z2), q, atol=1e-9)
    assert cam.project(2 * cam.position - obj)[1] < 0


def test_camera_model_from_dict_and_errors():
    cam = CameraModel(64, 48, 50.0, 50.0, 32.0, 24.0, np.eye(3), np.zeros(3))
    again = CameraModel.from_dict(cam.to_dict())
    np.testing.assert_allclose(again.rotation, cam.rotation)
    q = CameraModel.from_dict({**{k: v for k, v in cam.to_dict().items() if k != "rotation"}, "quat": [1, 0, 0, 0]})
    np.testing.assert_allclose(q.rotation, np.eye(3), atol=1e-12)
    with pytest.raises(RewardConfigError, match="exactly one of rotation"):
        CameraModel.from_dict({"width": 64})
    with pytest.raises(ValueError, match="orthonormal"):
        CameraModel(64, 48, 50.0, 50.0, 32.0, 24.0, np.ones((3, 3)), np.zeros(3))
    # depth sampling: nearest pixel, NaN outside
    img = np.arange(48 * 64, dtype=float).reshape(48, 64)
    z = cam.sample_depth(img, np.array([[0.2, 0.9], [63.99, 47.5], [64.0, 1.0], [-0.1, 3]]))
    assert z[0] == 0 and z[1] == img[47, 63] and np.isnan(z[2]) and np.isnan(z[3])


def test_camera_source_gives_the_sim_sources_reward():
    """2D pixels + depth through the camera model reproduce the reward computed from 3D keypoints."""
    task = "pick_place"
    batch, _ = rollout(task, 0, "expert")
    env = _env(task)
    env.reset(seed=0)
    u = env.unwrapped
    cam = CameraModel.from_mujoco(u.model, u.data, "front", 320, 240)
    names = list(u.embodiment.extra["keypoint_names"])

    def to_camera(obs):
        uv, z = cam.project(obs["keypoints"].astype(np.float64))
        return {**obs, "keypoints_uv": uv, "keypoint_depth": z}

    sim_term = term_for(task)
    cam_term = KeypointReward(load_waypoints(task)[0], CameraKeypoints(cam, names, "keypoints_uv", "keypoint_depth"))
    cam_batch = Transitions(to_camera(batch.obs), batch.action, to_camera(batch.next_obs))
    a, b = sim_term(batch), cam_term(cam_batch)
    np.testing.assert_allclose(a.reward, b.reward, atol=1e-4)
    np.testing.assert_array_equal(a.success, b.success)
    assert set(cam_term.requires) >= {"keypoints_uv", "keypoint_depth", "ee_pos", "gripper"}
    # A point the camera cannot see (outside the image) is never "satisfied" and has no closeness.
    lost = to_camera(batch.next_obs)
    lost["keypoints_uv"][:, names.index("object")] = [-5.0, -5.0]
    ev = cam_term.evaluate(lost)
    assert not ev["satisfied"][:, 1:].any()


# ---------------------------------------------------------------------------
# progress along the scripted experts


@pytest.mark.parametrize("task", list(TASKS))
def test_stage_monotone_along_expert_and_success_agrees(task):
    term = term_for(task)
    n = len(term.waypoints)
    for seed in (0, 1):
        batch, env_success = rollout(task, seed, "expert")
        out = term(batch)
        stage = out.components["stage"]
        drops = int(np.sum(np.diff(stage) < 0))
        # The push expert may back off and re-approach the block once; the others never go back.
        assert drops <= (1 if task == "push" else 0), stage
        assert stage[0] < n and stage[-1] == n, stage
        assert out.components["potential"][-1] == pytest.approx(1.0)
        assert np.mean(out.success == env_success) >= 0.95
        # Once the final waypoint holds, the sparse reward overrides the dense one.
        np.testing.assert_allclose(out.reward[out.success], 2.0)


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_earns_more_than_random(task):
    term = term_for(task)
    expert = np.mean([term(rollout(task, s, "expert")[0]).reward.mean() for s in (0, 1)])
    random = np.mean([term(rollout(task, s, "random")[0]).reward.mean() for s in (0, 1)])
    assert expert > random + 0.3, (expert, random)


# ---------------------------------------------------------------------------
# the reward's algebra


def test_override_semantics_and_dense_switch():
    batch, _ = rollout("pick_place", 0, "expert")
    term = term_for("pick_place", success_reward=3.0)
    out = term(batch)
    fin = out.components["stage"] == 3
    assert fin.any() and (~fin).any()
    np.testing.assert_allclose(out.reward[fin], 3.0)
    np.testing.assert_allclose(out.reward[~fin], out.components["potential"][~fin], rtol=1e-6)
    np.testing.assert_array_equal(out.components["override"], fin.astype(np.float32))
    assert np.all((out.components["potential"] >= 0) & (out.components["potential"] <= 1))
    # success_reward 0: nothing overrides, the reward is the potential everywhere
    np.testing.assert_allclose(term_for("pick_place", success_reward=0.0)(batch).reward, out.components["potential"])
    # dense off: only the sparse reward remains
    sparse_only = term_for("pick_place", dense=False)(batch).reward
    np.testing.assert_allclose(sparse_only, np.where(fin, 2.0, 0.0))


@register("test_flag")
def _flag_term(params, spec) -> RewardTerm:
    class Flag(RewardTerm):
        name = "flag"

        def compute(self, batch: Transitions) -> RewardOutput:
            f = np.asarray(batch.info["flag"], np.float32)
            return RewardOutput(5.0 * f, {}, f > 0)

    return Flag()


def test_configured_sparse_term_overrides():
    batch, _ = rollout("reach", 0, "expert")
    flag = np.zeros(len(batch))
    flag[[2, 5]] = 1.0
    batch.info["flag"] = flag
    out = term_for("reach", sparse={"kind": "test_flag"})(batch)
    np.testing.assert_allclose(out.reward[[2, 5]], 5.0)
    rest = np.setdiff1d(np.arange(len(batch)), [2, 5])
    np.testing.assert_allclose(out.reward[rest], out.components["potential"][rest], rtol=1e-6)
    np.testing.assert_array_equal(out.success, flag > 0)  # the sparse term's verdict


def test_potential_based_shaping_form():
    batch, _ = rollout("push", 1, "expert")
    gamma, w = 0.9, 0.5
    plain = term_for("push", gamma=gamma)(batch)
    shaped = term_for("push", gamma=gamma, shaping_weight=w)(batch)
    term = term_for("push")
    phi0 = term.evaluate(batch.obs)["potential"]
    phi1 = term.evaluate(batch.next_obs)["potential"]
    F = gamma * phi1 - phi0
    np.testing.assert_allclose(shaped.components["shaping"], F, atol=1e-6)
    np.testing.assert_allclose(shaped.reward, plain.reward + w * F, atol=1e-5)
    # Along one trajectory the discounted shaping telescopes: sum_t g^t F_t = g^T Phi(s_T) - Phi(s_0).
    disc = gamma ** np.arange(len(batch))
    assert np.sum(disc * F) == pytest.approx(gamma ** len(batch) * phi1[-1] - phi0[0], abs=1e-6)
    # Terminal transitions: Phi(s') counts as 0.
    batch.info["terminated"] = np.ones(len(batch), bool)
    np.testing.assert_allclose(term_for("push", gamma=gamma, shaping_weight=w)(batch).components["shaping"],
                               -phi0, atol=1e-6)


def test_relabel_batch_equals_one_by_one():
    batch, _ = rollout("drawer_open", 0, "expert")
    term = term_for("drawer_open", shaping_weight=1.0)
    whole = term(batch)
    singles = [term(batch.select(slice(i, i + 1))) for i in range(len(batch))]
    np.testing.assert_allclose(whole.reward, np.concatenate([s.reward for s in singles]), rtol=1e-6)
    np.testing.assert_array_equal(whole.success, np.concatenate([s.success for s in singles]))
    chunked = relabel(term, batch, chunk=7)
    np.testing.assert_allclose(chunked.reward, whole.reward, rtol=1e-6)
    for k in whole.components:
        np.testing.assert_allclose(chunked.components[k], whole.components[k], rtol=1e-6)


def test_stage_rules_and_one_sided_distance():
    spec_names = ["pinch", "handle", "goal"]
    wps = [Waypoint("pinch", "handle", tolerance=0.02),
           Waypoint("handle", "goal", direction=(-1.0, 0.0, 0.0), tolerance=0.01)]

    def obs(pinch, handle, goal=(0.4, 0.0, 0.1)):
        kp = np.array([[pinch, handle, goal]], np.float32)
        return {"keypoints": kp, "ee_pos": kp[:, 0]}

    latest = KeypointReward(wps, SimKeypoints(spec_names))
    strict = KeypointReward(wps, SimKeypoints(spec_names), stage_rule="first_unsatisfied")
    # handle pulled past the goal (overshoot costs nothing) while the fingers are elsewhere
    o = obs((0.2, 0.3, 0.3), (0.35, 0.0, 0.1))
    assert latest.evaluate(o)["distances"][0, 1] == pytest.approx(0.0)
    assert latest.evaluate(o)["stage"][0] == 2 and strict.evaluate(o)["stage"][0] == 0
    # short of the goal: the shortfall along -x is the distance
    o = obs((0.5, 0.0, 0.1), (0.45, 0.0, 0.1))
    assert latest.evaluate(o)["distances"][0, 1] == pytest.approx(0.05, abs=1e-6)
    assert latest.evaluate(o)["stage"][0] == 0  # fingers 5 cm from the handle: nothing satisfied
    o = obs((0.45, 0.0, 0.1), (0.45, 0.0, 0.1))
    ev = latest.evaluate(o)
    assert ev["stage"][0] == 1 and ev["closeness"][0] == pytest.approx(1 - np.tanh(0.05 / 0.2), abs=1e-6)


# ---------------------------------------------------------------------------
# config


def test_config_composes_with_agent_gamma_and_auto_waypoints():
    from policies.config import compose

    cfg = compose(["task=panda_pick_place", "reward=keypoints", "agent.gamma=0.95"])
    spec = _env("pick_place").unwrapped.embodiment
    term = rewards.build(cfg.reward, spec)
    assert isinstance(term, KeypointReward) and term.gamma == pytest.approx(0.95)
    assert [w.name for w in term.waypoints] == ["over_block", "grasp", "block_at_goal"]
    # The training loop builds without a spec and binds later: "auto" resolves at bind time.
    late = rewards.build(cfg.reward)
    assert late.waypoints == []
    with pytest.raises(RewardConfigError, match="bind the term"):
        late.evaluate(rollout("pick_place", 0, "expert")[0].obs)
    late.bind(spec)
    assert late.waypoints == term.waypoints
    # another task's sequence by name
    term = rewards.build({"kind": "keypoints", "params": {"waypoints": "reach"}}, _env("pick_place").unwrapped.embodiment)
    assert [w.target for w in term.waypoints] == ["goal"]


def _spec(names=None) -> EmbodimentSpec:
    fields = [ObsField("ee_pos", (3,)), ObsField("gripper", (1,))]
    if names is not None:
        fields.append(ObsField("keypoints", (len(names), 3)))
    return EmbodimentSpec("fake/thing", 10.0, ActionSpec(("dx",), (0.01,)), tuple(fields),
                          extra={"keypoint_names": names} if names else {})


def test_config_errors_name_the_key(tmp_path: Path):
    with pytest.raises(RewardConfigError, match=r"waypoints='nope'.*available.*drawer_open.*pick_place.*reach"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "nope"}})
    with pytest.raises(RewardConfigError, match="unknown keys \\['tolerence'\\]"):
        rewards.build({"kind": "keypoints", "params": {"tolerence": 0.1}})
    with pytest.raises(RewardConfigError, match="stage_rule='whenever'"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "reach", "stage_rule": "whenever"}})
    with pytest.raises(RewardConfigError, match="gamma=2.0"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "reach", "gamma": 2.0}})
    with pytest.raises(RewardConfigError, match="source='lidar'"):
        rewards.build({"kind": "keypoints", "params": {"source": "lidar"}})
    with pytest.raises(RewardConfigError, match="camera must give"):
        rewards.build({"kind": "keypoints", "params": {"source": "camera", "waypoints": "reach"}})
    bad = [({"point": "pinch"}, "target must be a keypoint name"),
           ({"point": "pinch", "target": "goal", "tolerance": -1}, "tolerance must be"),
           ({"point": "pinch", "target": "goal", "gripper": "half"}, "gripper must be one of"),
           ({"point": "pinch", "target": "goal", "offset": [0, 1]}, "offset must be three"),
           ({"point": "pinch", "target": "goal", "axes": "xw"}, "axes must be one of"),
           ({"point": "pinch", "target": "goal", "speed": 1}, "unknown keys \\['speed'\\]")]
    for wp, msg in bad:
        with pytest.raises(RewardConfigError, match=msg):
            rewards.build({"kind": "keypoints", "params": {"waypoints": [wp]}})
    # unknown keypoint names: caught against the spec's names, listing them
    with pytest.raises(RewardConfigError, match=r"refers to \['handle'\]; known points: \['ee', 'ee_pos', 'goal'"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "drawer_open"}}, _env("reach").unwrapped.embodiment)
    with pytest.raises(RewardConfigError, match="publishes no keypoint_names"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "reach"}}, _spec())
    with pytest.raises(RewardConfigError, match="no waypoint file for task 'thing'"):
        rewards.build({"kind": "keypoints"}, _spec(["pinch", "goal"]))
    with pytest.raises(RewardConfigError, match=r"keypoint_names=\['goal', 'pinch'\] but"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "reach", "keypoint_names": ["goal", "pinch"]}},
                      _spec(["pinch", "goal"]))
    # files: broken YAML, missing list, a directory of one's own
    (tmp_path / "broken.yaml").write_text("waypoints: [\n")
    (tmp_path / "empty.yaml").write_text("description: nothing\n")
    (tmp_path / "mine.yaml").write_text("waypoints:\n  - {point: pinch, target: goal, tolerance: 0.05}\n")
    with pytest.raises(RewardConfigError, match="not valid YAML"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "broken", "waypoints_dir": str(tmp_path)}})
    with pytest.raises(RewardConfigError, match="must be a mapping with a 'waypoints' list"):
        rewards.build({"kind": "keypoints", "params": {"waypoints": "empty", "waypoints_dir": str(tmp_path)}})
    term = rewards.build({"kind": "keypoints", "params": {"waypoints": "mine", "waypoints_dir": str(tmp_path)}},
                         _spec(["pinch", "goal"]))
    assert term.waypoints[0].tolerance == 0.05 and term.requires == ("keypoints",)
    assert rewards.build({"kind": "keypoints", "params": {"waypoints": str(tmp_path / "mine.yaml")}}).waypoints
