"""Actor/learner split over ZeroMQ on 127.0.0.1 (ephemeral ports): the wire format, transitions arriving
intact, weights changing an actor's actions, a killed actor not stopping the learner, and local mode with
two actor processes on PandaReach keeping the single-process update count."""

import json
import os
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from policies import checkpoint
from policies.config import ConfigError
from policies.distributed import (
    TRANSITIONS,
    ActorClient,
    Learner,
    SimActor,
    WireError,
    check_transitions,
    compose_all,
    decode,
    encode,
    run_local,
)

TOY_TASK = "env_id: policies.toy_env:rftoy/PointReach-v0\nmax_episode_steps: 20\nkwargs: {}\n"
TOY_SMALL = ["task=point_reach", "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false",
             "progress=false", "agent.hidden=[16]", "agent.batch_size=32", "agent.buffer_size=20000", "log_every=100"]
D, A = 4, 2  # the toy task's flat state (position, goal) and action sizes


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "cfg" / "task").mkdir(parents=True)
    (tmp_path / "cfg" / "task" / "point_reach.yaml").write_text(TOY_TASK)
    return [f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", *TOY_SMALL, f"run_dir={tmp_path / 'run'}"]


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = parts[1].split(":")
            raw = bytes.fromhex(hex_addr)
            if family == socket.AF_INET:
                raw = raw[::-1]
            else:  # four little-endian 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
            out.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return out


def test_wire_format_roundtrip_and_rejections():
    arrays = {"obs": np.arange(24, dtype=np.float32).reshape(3, 2, 4), "flag": np.array([[True, False]] * 3)}
    frames = encode({"format": TRANSITIONS, "actor": "a"}, arrays)
    header, back = decode([bytes(memoryview(f)) for f in frames], TRANSITIONS)
    assert header["actor"] == "a" and set(back) == {"obs", "flag"}
    np.testing.assert_array_equal(back["obs"], arrays["obs"])
    np.testing.assert_array_equal(back["flag"], arrays["flag"])
    head = frames[0]
    with pytest.raises(WireError, match="bytes"):  # truncated buffer
        decode([head, bytes(memoryview(frames[1]))[:-4], bytes(memoryview(frames[2]))], TRANSITIONS)
    with pytest.raises(WireError, match="not JSON"):  # a pickle is never unpickled
        decode([pickle.dumps({"format": TRANSITIONS})], TRANSITIONS)
    with pytest.raises(WireError, match="expected format"):
        decode([json.dumps({"format": "other/1", "arrays": []}).encode()], TRANSITIONS)
    bad = json.loads(head)
    bad["arrays"][0]["dtype"] = "|O"
    with pytest.raises(WireError, match="not allowed"):
        decode([json.dumps(bad).encode(), *[bytes(memoryview(f)) for f in frames[1:]]], TRANSITIONS)
    with pytest.raises(WireError, match="dtype"):
        encode({"format": TRANSITIONS}, {"x": np.zeros(2, np.float64)})
    ok = {"obs": np.zeros((2, 1, D), np.float32), "next_obs": np.zeros((2, 1, D), np.float32),
          "action": np.zeros((2, 1, A), np.float32), "reward": np.zeros((2, 1), np.float32),
          "terminated": np.zeros((2, 1), bool), "truncated": np.zeros((2, 1), bool)}
    assert check_transitions(ok, D, A) == (2, 1)
    with pytest.raises(WireError, match="obs has shape"):
        check_transitions(ok, D + 1, A)
    with pytest.raises(WireError, match="NaN"):
        check_transitions({**ok, "reward": np.full((2, 1), np.nan, np.float32)}, D, A)


def test_config_errors_name_the_key(toy):
    with pytest.raises(ConfigError, match=r"did you mean 'num_actors'"):
        compose_all([*toy, "num_actor=2"])
    with pytest.raises(ConfigError, match=r"role='boss'.*local, learner, actor"):
        compose_all([*toy, "role=boss"])
    with pytest.raises(ConfigError, match=r"transitions_port=0.*fixed port"):
        compose_all([*toy, "role=learner"])
    with pytest.raises(ConfigError, match=r"reward.kind"):
        compose_all([*toy, "reward=keypoints"])
    with pytest.raises(ConfigError, match=r"warmup_actions='policy'.*single-process loop"):
        compose_all([*toy, "warmup_actions=policy"])
    cfg, d = compose_all([*toy, "num_actors=3", "seed=4"])
    assert d.num_actors == 3 and cfg.seed == 4 and d.host == "127.0.0.1"


def test_transitions_arrive_intact(toy):
    cfg, d = compose_all([*toy, "reward.scale=2.0", "total_steps=1000"])
    learner = Learner(cfg, d)
    client = ActorClient(learner.transitions_endpoint, learner.weights_endpoint, "robot-1", 5.0,
                         embodiment=learner.trainer.spec.name)
    try:
        assert learner.transitions_endpoint.startswith("tcp://127.0.0.1:")
        assert sorted(listening(os.getpid())) == sorted(
            ("127.0.0.1", int(ep.rsplit(":", 1)[1])) for ep in (learner.transitions_endpoint, learner.weights_endpoint))
        rng = np.random.default_rng(0)
        T, E = 5, 2
        chunk = {"obs": rng.normal(size=(T, E, D)).astype(np.float32),
                 "action": rng.uniform(-1, 1, (T, E, A)).astype(np.float32),
                 "reward": rng.normal(size=(T, E)).astype(np.float32),
                 "next_obs": rng.normal(size=(T, E, D)).astype(np.float32),
                 "terminated": np.zeros((T, E), bool), "truncated": np.zeros((T, E), bool)}
        chunk["terminated"][1, 0] = True
        chunk["truncated"][3, 1] = True
        client.send(**chunk, episodes=[{"env": 0, "t": 1, "return": -3.5, "length": 12, "success": True}])
        # a pickle, a malformed episode summary and another embodiment's data are dropped whole
        client.push.send_multipart([pickle.dumps(chunk)])
        client.send(**chunk, episodes=[{"t": "soon", "return": 1.0, "length": 1, "success": False}])
        client.embodiment = "other/robot"
        client.send(**chunk)
        got, deadline = 0, time.monotonic() + 10
        while time.monotonic() < deadline and sum(learner.rejected.values()) < 3:
            got += learner.receive(100)
        assert got == T * E and learner.trainer.step == T * E
        assert sum(learner.rejected.values()) == 3
        buf = learner.trainer.buffer
        assert buf.num_envs == 1 and buf.ptr == T * E
        for e in range(E):  # stored env by env, each segment in time order
            rows = slice(e * T, (e + 1) * T)
            np.testing.assert_array_equal(buf.obs[rows, 0], chunk["obs"][:, e])
            np.testing.assert_array_equal(buf.action[rows, 0], chunk["action"][:, e])
            np.testing.assert_array_equal(buf.next_obs[rows, 0], chunk["next_obs"][:, e])
            np.testing.assert_allclose(buf.reward[rows, 0], 2.0 * chunk["reward"][:, e])  # reward.scale
            np.testing.assert_array_equal(buf.terminated[rows, 0], chunk["terminated"][:, e])
            ends = chunk["terminated"][:, e] | chunk["truncated"][:, e]
            ends[-1] = True  # segment end: n-step returns stop here
            np.testing.assert_array_equal(buf.episode_end[rows, 0], ends)
        (row,) = [r for r in learner.trainer.rows if r["kind"] == "episode"]
        assert row == {"step": T * E, "kind": "episode", "episode_return": -3.5, "episode_length": 12,
                       "success": True, "actor": "robot-1"}
        assert learner.actors["robot-1"]["steps"] == T * E
    finally:
        client.close()
        learner.close()


def test_weights_reach_an_actor_and_change_its_actions(toy):
    cfg, d = compose_all([*toy, "total_steps=1000"])
    learner = Learner(cfg, d)
    actor = SimActor(cfg, d, learner.transitions_endpoint, learner.weights_endpoint, "a0", seed=3)
    try:
        obs = np.random.default_rng(1).uniform(-1, 1, (8, D)).astype(np.float32)
        assert actor.net is None  # random actions until weights arrive
        agent = learner.trainer.agent
        last = agent.actor.net[-1]  # mean = bias (weights zeroed), log_std at its minimum: near-deterministic

        def publish(mean: float) -> None:
            with torch.no_grad():
                last.weight.zero_()
                last.bias[:A] = mean
                last.bias[A:] = -20.0
            learner.trainer.num_updates += 1  # the version is the learner's update count
            deadline = time.monotonic() + 10
            before = actor.version
            while actor.version == before and time.monotonic() < deadline:
                learner.publish_weights()
                actor.refresh(50)
            assert actor.version == learner.version

        publish(1.0)
        a1 = actor.act(obs)
        np.testing.assert_allclose(a1, np.tanh(1.0), atol=0.02)
        expected = learner.trainer.policy_act(obs)
        with torch.no_grad():
            np.testing.assert_allclose(actor.net.act(torch.from_numpy(obs), True).numpy(), expected, atol=1e-6)
        publish(-2.0)
        np.testing.assert_allclose(actor.act(obs), np.tanh(-2.0), atol=0.02)
        # an old version republished is ignored
        v = actor.version
        learner.trainer.num_updates -= 5
        learner.publish_weights()
        actor.refresh(100)
        assert actor.version == v
        # ... unless it comes from a restarted learner (a new session): its count starts again
        learner.session = "restarted"
        publish(0.5)
        assert actor.version < v
        np.testing.assert_allclose(actor.act(obs), np.tanh(0.5), atol=0.02)
    finally:
        actor.close()
        learner.close()


def test_local_mode_two_actors_panda_reach_and_a_killed_actor(tmp_path):
    """Local mode end to end on PandaReach with 2 actor processes; actor0 is SIGKILLed after its first
    chunk and actor1 alone brings the run to total_steps, with the single-process update count."""
    run_dir = tmp_path / "run"
    cfg, d = compose_all(["task=panda_reach", f"run_dir={run_dir}", "total_steps=300", "warmup_steps=100",
                          "agent.hidden=[32,32]", "agent.batch_size=32", "agent.utd=2", "agent.buffer_size=5000",
                          "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "video=false", "progress=false",
                          "log_every=100", "num_actors=2", "chunk_steps=10", "max_lag_steps=64", "idle_timeout_s=60",
                          "learner_timeout_s=120"])
    procs, killed, ports = [], {}, []

    def on_step(lr: Learner) -> None:
        if not killed and lr.actors.get("actor0", {}).get("steps", 0) > 0:
            ports.extend(listening(os.getpid()) + [x for p in procs for x in listening(p.pid)])
            procs[0].kill()
            procs[0].join(5)
            killed["at"] = lr.trainer.step

    result = run_local(cfg, d, on_step, procs_out=procs)
    assert killed and killed["at"] < 300
    assert result["actor_exit_codes"] == {"actor0": -9, "actor1": 0}
    assert result["stopped_reason"] == "total_steps" and result["env_steps"] == 300
    steps = {k: v["steps"] for k, v in result["actors"].items()}
    assert steps["actor0"] > 0 and steps["actor1"] > 0 and steps["actor0"] + steps["actor1"] == 300
    # learner and actors listen on nothing but the learner's two loopback endpoints
    assert sorted(ports) == sorted(("127.0.0.1", int(ep.rsplit(":", 1)[1]))
                                   for ep in (result["transitions_endpoint"], result["weights_endpoint"]))
    # the single-process loop's count: one learning step per env step from step max(warmup, batch) on,
    # each with agent.utd critic updates (read from the agent's own counter in the checkpoint)
    assert result["num_updates"] == 300 - 100 + 1
    ckpt = checkpoint.load(run_dir / "checkpoints" / "final.pt")
    assert ckpt["agent"]["num_updates"] == 2 * (300 - 100 + 1) and ckpt["step"] == 300
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    episodes = [r for r in rows if r["kind"] == "episode"]
    assert len(episodes) >= 4 and all(r["episode_length"] == 50 for r in episodes)
    assert {r["actor"] for r in episodes} <= {"actor0", "actor1"}
    assert [r["kind"] for r in rows].count("eval") == 1
    for name in ("config.yaml", "distributed.yaml", "summary.json", "metrics.csv", "learning_curve.png"):
        assert (run_dir / name).exists(), name


def test_intervention_flags_on_the_wire_go_to_the_demo_buffer(tmp_path):
    """The optional ``intervention`` array: validated against (T, E) |b1, absent = none; with
    intervention.to_demos the learner stores flagged steps in its demonstration buffer as well as
    the online replay (the Trainer's path), and not otherwise."""
    common = ["task=panda_reach", "agent.hidden=[16]", "agent.batch_size=8", "agent.buffer_size=1000",
              "eval_every=0", "checkpoint_every=0", "video=false", "progress=false", "total_steps=1000",
              "intervention.demo_buffer_size=100"]
    rng = np.random.default_rng(0)
    T, E = 6, 2

    def chunk(learner):
        Dp, Ap = learner.obs_dim, learner.act_dim
        return {"obs": rng.normal(size=(T, E, Dp)).astype(np.float32),
                "action": rng.uniform(-1, 1, (T, E, Ap)).astype(np.float32),
                "reward": rng.normal(size=(T, E)).astype(np.float32),
                "next_obs": rng.normal(size=(T, E, Dp)).astype(np.float32),
                "terminated": np.zeros((T, E), bool), "truncated": np.zeros((T, E), bool)}

    cfg, d = compose_all([*common, f"run_dir={tmp_path / 'a'}", "intervention.enabled=true", "reward.scale=3.0"])
    learner = Learner(cfg, d)
    try:
        c = chunk(learner)
        with pytest.raises(WireError, match="intervention"):  # wrong shape
            check_transitions({**c, "intervention": np.zeros((T, E + 1), bool)}, learner.obs_dim, learner.act_dim)
        with pytest.raises(WireError, match="intervention"):  # wrong dtype
            check_transitions({**c, "intervention": np.zeros((T, E), np.float32)}, learner.obs_dim, learner.act_dim)
        header = {"actor": "ros", "episodes": [{"t": 5, "return": 1.0, "length": 6, "success": False,
                                                "intervention_steps": 3}]}
        assert learner.store(header, c) == T * E  # no flags: nothing to the demo side
        assert len(learner.trainer.demo_buffer) == 0
        flag = np.zeros((T, E), bool)
        flag[[1, 2, 4], 0] = True
        flag[0, 1] = True
        frames = encode({"format": TRANSITIONS, "actor": "ros"}, {**c, "intervention": flag})
        _, arrays = decode([bytes(memoryview(f)) for f in frames], TRANSITIONS)
        assert learner.store({"actor": "ros"}, arrays) == T * E
        demo, buf = learner.trainer.demo_buffer, learner.trainer.buffer
        assert len(demo) == 4 and len(buf) == 2 * T * E  # flagged steps on both sides
        for k, (i, e) in enumerate([(1, 0), (2, 0), (4, 0), (0, 1)]):  # env by env, in time order
            np.testing.assert_array_equal(demo.obs[k, 0], c["obs"][i, e])
            np.testing.assert_array_equal(demo.action[k, 0], c["action"][i, e])
            np.testing.assert_allclose(demo.reward[k, 0], 3.0 * c["reward"][i, e])
            np.testing.assert_array_equal(demo.next_obs[k, 0], c["next_obs"][i, e])
        assert learner.actors["ros"]["intervention_steps"] == 4
        (row,) = [r for r in learner.trainer.rows if r["kind"] == "episode"]
        assert row["intervention_steps"] == 3
    finally:
        learner.close()

    cfg, d = compose_all([*common, f"run_dir={tmp_path / 'b'}", "intervention.enabled=true",
                          "intervention.to_demos=false"])
    learner = Learner(cfg, d)
    try:
        c = chunk(learner)
        assert learner.store({"actor": "ros"}, {**c, "intervention": np.ones((T, E), bool)}) == T * E
        assert learner.trainer.demo_buffer is None and learner.actors["ros"]["intervention_steps"] == T * E
    finally:
        learner.close()
