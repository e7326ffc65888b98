"""The policy on a robot: ``rewardforge-policy``.

Loads a checkpoint, refuses it when its embodiment spec does not match the robot's
(``embodiment_task``: a sim task id whose spec the robot follows, or ``embodiment_file``:
a spec saved as JSON/YAML), builds the observation from topics (robot/observation.py:
each field fresh within ``staleness`` s, all within ``max_skew`` s of each other),
runs the policy at ``control_rate`` and publishes its command to the command gate,
never to the arm: the gate's safety layer stands between the two.

An image policy (a pixel checkpoint, policies/pixels.py) also reads its cameras from
``camera/<camera>/image_raw`` (sensor_msgs/Image, sensor-data QoS; ``observation_map`` may
name other topics), each frame fresh within ``image_staleness`` s; ``cameras`` and
``image_size`` default to the checkpoint's, and a frame of another size is refused.
Image policies run at 10 Hz on the Panda tasks (their control rate).

Publishes ``policy/cmd`` (TwistStamped, m/s: action * action scale * control rate;
stamped with the observation's newest input time), ``policy/gripper`` (Float64),
``policy/action`` (Float64MultiArray, the raw normalised action, for the recorder).

As an actor of online learning (``learner_host`` set; empty: off, and nothing below runs) the
node also streams its experience to ``rewardforge-learner`` (policies/distributed.py, wire
format there) and acts with the weights the learner sends back (:class:`OnlineActor`):

* transition t: the observation of tick t, the action the arm EXECUTED until tick t+1 (mean of
  the command gate's ``gate/executed`` over that period: the person's command while they held
  the SpaceMouse, the safety-clipped policy command otherwise), the reward of tick t+1's state
  and that observation. The reward is the sim's own task reward (``reward_topic``, default
  ``sim/reward``): the learner trains and evaluates on the task reward (the split refuses learned
  reward terms), so stored and evaluated returns agree; a real robot points ``reward_topic`` at
  the reward monitor's ``reward/value``. ``intervention`` is true if the gate flagged a takeover
  at any time in the period (``intervention`` topic).
* episodes: the sim robot announces each episode's start time on ``sim/episode``
  (``episode_topic``, std_msgs/Header, latched; whoever calls ``sim_robot/reset`` ends an
  episode, e.g. the scripted person). A transition is kept only when both of its observations lie
  wholly inside one episode (by their input stamps); the last kept step of an episode is sent
  truncated (time limit: the learner bootstraps), with the episode's return, length, success
  (``success_topic``) and intervention steps. Transitions are decided ``settle`` s after their
  second observation, so a late episode announcement still splits them correctly.
* weights: polled at the start of a tick, never during one; ``policy/version`` (std_msgs/Int64)
  says which weights produced the command (-1: random actions, or the ``checkpoint`` if one was
  given, until the learner's first weights). ``explore`` samples from the policy (SAC's
  stochastic actor) instead of its mean. ``checkpoint`` may be empty: the node then needs only
  the embodiment (``embodiment_task`` / ``embodiment_file``).
* evaluation episodes (``eval_every`` N > 0): every N-th episode (sim/episode numbers n with
  (n + 1) % N == 0) the node acts with the policy's mean action, and the scripted person with the
  same ``eval_every`` keeps off, so the policy alone is measured on the robot while it learns; those
  episodes' summaries carry ``"eval": true`` (their transitions still train the learner).
* a learner that is not there costs nothing: a chunk it does not take within ``send_timeout`` s
  is dropped (counted), so the control loop never waits on the network.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import yaml
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64, Float64MultiArray, Header, Int64

from common.spec import EmbodimentSpec, flatten_state
from robot.observation import ObservationAssembler, load_sources, robot_spec, with_cameras
from robot.ros_io import (
    COMMAND_QOS,
    IMAGE_QOS,
    LATCHED_QOS,
    STATE_QOS,
    image_array,
    subscribe_sources,
    to_sec,
    twist_msg,
)


def _episode_number(msg: Header) -> int | None:
    """sim/episode's frame_id is the episode number; None if a publisher put something else there."""
    try:
        return int(msg.frame_id)
    except ValueError:
        return None


class OnlineActor:
    """The actor side of online learning inside the policy node (pure Python; the node feeds it).

    Bookkeeping only: which observations, executed actions, rewards and flags form a transition,
    where episodes end, when a chunk goes to the learner, which weights to act with. See the
    module docstring for the definitions."""

    def __init__(self, spec: EmbodimentSpec, client, chunk_steps: int, settle: float, explore: bool,
                 seed: int = 0, eval_every: int = 0) -> None:
        import torch

        self.spec, self.client = spec, client
        self.T, self.settle, self.explore = int(chunk_steps), float(settle), bool(explore)
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.net = None
        self.version = -1
        self.D, self.A = spec.state_dim, spec.action.dim
        # executed command and takeover flag accumulated since the last tick
        self.exec_sum, self.exec_n, self.intervened = np.zeros(self.A), 0, False
        self.reward, self.success = 0.0, False
        self.starts: list[float] = []  # episode start stamps (sim/episode), ascending
        self.numbers: list[int] = []  # their episode numbers (sim/episode frame_id)
        self.eval_every = int(eval_every)
        self.ep_eval = False  # the episode being decided is an evaluation episode
        self.prev: tuple[np.ndarray, float, float] | None = None  # (obs_flat, lo, hi) of the last tick
        self.pending: list[dict] = []  # transitions not yet decided (episode announcement may lag)
        self.rows: list[dict] = []  # decided, not yet sent
        self.episodes: list[dict] = []  # summaries of episodes that ended at a row of self.rows
        self.cur_ep: int | None = None  # episode index of the last decided row
        self.ep_ret, self.ep_len, self.ep_success, self.ep_intv = 0.0, 0, False, 0
        self.sent = self.sent_steps = self.dropped_chunks = self.discarded = self.intervention_steps = 0
        self.episodes_done = 0
        self.stopped = False  # the learner said stop: keep acting, stop streaming

    # ---- inputs (message callbacks) ----------------------------------------------
    def executed(self, a: np.ndarray) -> None:
        if a.shape == (self.A,) and np.all(np.isfinite(a)):
            self.exec_sum += np.clip(a, -1.0, 1.0)
            self.exec_n += 1

    def intervention(self, flag: bool) -> None:
        self.intervened |= bool(flag)

    def episode_start(self, stamp: float, number: int | None = None) -> None:
        if not self.starts or stamp > self.starts[-1]:
            self.starts.append(float(stamp))
            self.numbers.append(len(self.numbers) if number is None else int(number))

    def is_eval(self, number: int | None) -> bool:
        """Is episode ``number`` an evaluation episode (mean actions, nobody steps in)?"""
        return self.eval_every > 0 and number is not None and (number + 1) % self.eval_every == 0

    def evaluating(self) -> bool:
        """Is the current episode (the latest announced) an evaluation episode?"""
        return self.is_eval(self.numbers[-1] if self.numbers else None)

    # ---- weights --------------------------------------------------------------------
    def refresh(self) -> bool:
        """Take the newest weights the learner published (call between ticks). True if swapped."""
        from policies.distributed import actor_network

        if not self.client.poll(0) or self.client.weights is None:
            return False
        self.net = actor_network(self.client.weights, self.D, self.A, self.net)
        self.version = int(self.client.weights[0]["version"])
        return True

    def act(self, obs: dict[str, np.ndarray], fallback=None) -> np.ndarray:
        """The learner's policy once it sent weights; before that ``fallback(obs)`` (a checkpoint) or
        uniform random actions (the learner's warm-up)."""
        if self.net is not None:
            import torch

            x = torch.from_numpy(flatten_state(self.spec, obs)[None].astype(np.float32))
            with torch.inference_mode():
                return self.net.act(x, deterministic=not self.explore or self.evaluating())[0].numpy()
        if fallback is not None:
            return np.asarray(fallback(obs), np.float32)
        return self.rng.uniform(-1.0, 1.0, self.A).astype(np.float32)

    # ---- transitions -------------------------------------------------------------------
    def tick(self, obs: dict[str, np.ndarray] | None, lo: float, hi: float, now: float) -> None:
        """Tick t+1 (before acting): close transition t with this observation (None: inputs were stale,
        the chain breaks), then decide settled transitions and send full chunks."""
        if obs is None:
            self.prev = None
        else:
            flat = flatten_state(self.spec, obs).astype(np.float32)
            if self.prev is not None and self.exec_n > 0:
                o, lo0, hi0 = self.prev
                self.pending.append({"obs": o, "action": (self.exec_sum / self.exec_n).astype(np.float32),
                                     "reward": self.reward, "next_obs": flat, "intervention": self.intervened,
                                     "success": self.success, "span": (lo0, hi0, lo, hi)})
            elif self.prev is not None:
                self.discarded += 1  # the gate executed nothing (it is down): no action to store
            self.prev = (flat, lo, hi)
        self.exec_sum[:], self.exec_n, self.intervened = 0.0, 0, False
        self.decide(now)

    def _episode_of(self, lo: float, hi: float) -> int | None:
        import bisect

        a, b = bisect.bisect_right(self.starts, lo), bisect.bisect_right(self.starts, hi)
        return a if a == b else None  # None: inputs from both sides of a reset

    def decide(self, now: float, everything: bool = False) -> None:
        while self.pending and (everything or self.pending[0]["span"][3] < now - self.settle):
            tr = self.pending.pop(0)
            lo0, hi0, lo1, hi1 = tr.pop("span")
            e0, e1 = self._episode_of(lo0, hi0), self._episode_of(lo1, hi1)
            valid = e0 is not None and e0 == e1
            if self.cur_ep is not None and (not valid or e0 != self.cur_ep):
                self._end_episode()
            if not valid:
                self.discarded += 1
                continue
            tr["hi1"] = hi1
            self.rows.append(tr)
            if self.cur_ep is None:  # the episode's first decided step (e0: starts announced up to it)
                self.ep_eval = self.is_eval(self.numbers[e0 - 1] if e0 > 0 else None)
            self.cur_ep = e0
            self.ep_ret += tr["reward"]
            self.ep_len += 1
            self.ep_success |= tr["success"]
            self.ep_intv += int(tr["intervention"])
            self.intervention_steps += int(tr["intervention"])
        if (self.cur_ep is not None and self.rows and self.starts and self.starts[-1] > self.rows[-1]["hi1"]
                and not any(tr["span"][3] < self.starts[-1] for tr in self.pending)):
            self._end_episode()  # a newer episode has begun and no undecided step belongs to this one
        while len(self.rows) > self.T:  # keep the newest row back: a reset may still truncate it
            self._send(self.T)

    def _end_episode(self) -> None:
        if self.rows and not self.rows[-1].get("truncated"):
            self.rows[-1]["truncated"] = True
            self.episodes.append({"t": len(self.rows) - 1, "return": float(self.ep_ret), "length": int(self.ep_len),
                                  "success": bool(self.ep_success), "intervention_steps": int(self.ep_intv),
                                  "eval": bool(self.ep_eval)})
            self.episodes_done += 1
        self.cur_ep = None
        self.ep_ret, self.ep_len, self.ep_success, self.ep_intv = 0.0, 0, False, 0

    def _send(self, n: int) -> None:
        import zmq

        chunk, self.rows = self.rows[:n], self.rows[n:]
        eps = [e for e in self.episodes if e["t"] < n]
        self.episodes = [{**e, "t": e["t"] - n} for e in self.episodes if e["t"] >= n]
        if self.client.status.get("stop"):
            self.stopped = True
        if self.stopped or not chunk:
            return
        col = lambda k, dt: np.asarray([r[k] for r in chunk], dt)[:, None]  # noqa: E731 - (T, 1, ...)
        try:
            self.client.send(col("obs", np.float32), col("action", np.float32), col("reward", np.float32),
                             col("next_obs", np.float32), np.zeros((len(chunk), 1), bool),
                             np.asarray([r.get("truncated", False) for r in chunk], bool)[:, None],
                             episodes=eps, policy_version=self.version, intervention=col("intervention", bool))
            self.sent += 1
            self.sent_steps += len(chunk)
        except zmq.Again:
            self.dropped_chunks += 1

    def flush(self) -> None:
        """Send everything decided so far (shutdown): the unfinished episode goes without an end."""
        self.decide(0.0, everything=True)
        if self.rows:
            self._send(len(self.rows))


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        p = self.declare_parameter
        ckpt = p("checkpoint", "").value
        learner_host = p("learner_host", "").value  # "": no online learning (deploy a checkpoint)
        if not ckpt and not learner_host:
            raise ValueError("parameter checkpoint is required (a .pt file from rewardforge-train), "
                             "unless learner_host is set (online learning: random actions until the learner's weights)")
        self.spec = robot_spec(p("embodiment_task", "rewardforge/PandaReach-v0").value, p("embodiment_file", "").value)
        import torch

        from policies import checkpoint
        from policies.policy import Policy

        # One intra-op thread: a conv encoder on more threads than free cores makes OpenMP workers
        # spin and starves this node's message callbacks (measured: commands fell 100+ ms behind).
        torch.set_num_threads(int(p("torch_threads", 1).value))

        cams = [c for c in p("cameras", [""], ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY, description="cameras; [''] for the checkpoint's")).value if c]
        size = int(p("image_size", 0).value)
        self.policy = None
        if ckpt:
            state = checkpoint.load(ckpt)
            trained_for = EmbodimentSpec.from_dict(state["embodiment"])
            # Cameras of an image policy: the robot's are named by parameters (default: the checkpoint's).
            cams = cams or [f.name.removeprefix("image_") for f in trained_for.image_fields]
            size = size or next((f.shape[0] for f in trained_for.image_fields), 84)
            if cams:
                self.spec = with_cameras(self.spec, cams, size)
            trained_for.require_compatible(self.spec, what=f"checkpoint {ckpt}")  # lists every difference
            self.policy = Policy.from_checkpoint(state)
        self.reads_images = self.policy is not None and self.policy.encoder is not None
        self.control_rate = float(p("control_rate", 0.0).value) or self.spec.control_hz
        self.deterministic = bool(p("deterministic", True).value)
        obs_map = p("observation_map", "").value
        overrides = yaml.safe_load(Path(obs_map).read_text()) if obs_map else None
        self.sources = load_sources(self.spec, overrides, images=self.reads_images)
        self.assembler = ObservationAssembler(self.spec, self.sources, float(p("staleness", 0.25).value),
                                              float(p("max_skew", 0.15).value),
                                              float(p("image_staleness", 0.3).value))
        self.base_frame = p("base_frame", "base").value
        scale = np.asarray(self.spec.action.scale, float)
        layout = self.spec.action.layout
        self.v_scale = scale[:3] * self.control_rate  # m/s per unit action
        self.yaw_index = layout.index("dyaw") if "dyaw" in layout else None
        self.yaw_scale = scale[self.yaw_index] * self.control_rate if self.yaw_index is not None else 0.0

        self.trigger_topic = p("trigger_topic", "").value
        state_sources = {k: v for k, v in self.sources.items() if all(s.kind != "image" for s in v)}
        topics = subscribe_sources(self, state_sources, self.assembler, self._on_message)
        topics = sorted(topics + self._subscribe_images())
        self.pub_cmd = self.create_publisher(TwistStamped, "policy/cmd", COMMAND_QOS)
        self.pub_grip = self.create_publisher(Float64, "policy/gripper", COMMAND_QOS)
        self.pub_action = self.create_publisher(Float64MultiArray, "policy/action", STATE_QOS)
        # Timer-driven by default. With trigger_topic set, the policy runs when a message arrives
        # there (at most control_rate times a second): the command then follows the newest state
        # by compute + transport time only, not by up to one timer period.
        self.last_run = -1.0
        if self.trigger_topic:
            if self.trigger_topic not in topics:
                raise ValueError(f"trigger_topic {self.trigger_topic!r} is not an input; inputs: {topics}")
        else:
            self.create_timer(1.0 / self.control_rate, self._tick)
        self.latencies: list[float] = []  # seconds from tick start to publish (compute latency)
        self.skipped = 0
        self.actor: OnlineActor | None = None
        if learner_host:
            self._start_actor(learner_host)
        self.get_logger().info(f"{ckpt or 'no checkpoint'} on {self.spec.name} at {self.control_rate:g} Hz; "
                               f"inputs: {topics}" + (f"; actor of the learner at {learner_host}" if self.actor else ""))

    def _start_actor(self, host: str) -> None:
        """Online learning: stream transitions to the learner at ``host``, act with its weights."""
        from policies.distributed import ActorClient

        p = self.declare_parameter
        if self.reads_images:
            raise ValueError("learner_host: the learner's wire format carries flat state vectors only; "
                             "an image policy cannot learn online yet (unset learner_host)")
        ports = {k: int(p(k, default).value) for k, default in (("transitions_port", 5555), ("weights_port", 5556))}
        for k, port in ports.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"parameter {k}={port}: a TCP port in [1, 65535] (the learner's)")
        chunk = int(p("chunk_steps", 16).value)
        settle = float(p("settle", 0.3).value)  # s before a transition is decided (episode announcements)
        send_timeout = float(p("send_timeout", 0.05).value)  # s: a chunk the learner does not take is dropped
        if chunk < 1 or settle < 0 or send_timeout <= 0:
            raise ValueError(f"parameters chunk_steps={chunk} (>= 1), settle={settle} (>= 0 s), "
                             f"send_timeout={send_timeout} (> 0 s)")
        client = ActorClient(f"tcp://{host}:{ports['transitions_port']}", f"tcp://{host}:{ports['weights_port']}",
                             p("actor_id", "").value or None, send_timeout, embodiment=self.spec.name)
        self.actor = OnlineActor(self.spec, client, chunk, settle, bool(p("explore", True).value),
                                 int(p("seed", 0).value), int(p("eval_every", 0).value))
        actor = self.actor
        self.create_subscription(Float64MultiArray, "gate/executed",
                                 lambda m: actor.executed(np.asarray(m.data, float)), STATE_QOS)
        self.create_subscription(Bool, "intervention", lambda m: actor.intervention(m.data), STATE_QOS)
        self.create_subscription(Float64, p("reward_topic", "sim/reward").value,
                                 lambda m: setattr(actor, "reward", float(m.data)), STATE_QOS)
        self.create_subscription(Bool, p("success_topic", "sim/success").value,
                                 lambda m: setattr(actor, "success", bool(m.data)), STATE_QOS)
        self.create_subscription(Header, p("episode_topic", "sim/episode").value,
                                 lambda m: actor.episode_start(to_sec(m.stamp), _episode_number(m)), LATCHED_QOS)
        self.pub_version = self.create_publisher(Int64, "policy/version", STATE_QOS)
        self.create_timer(5.0, self._report)

    def _report(self) -> None:
        a = self.actor
        silent = a.client.silent_for()
        text = (f"actor: policy version {a.version}, sent {a.sent_steps} steps in {a.sent} chunks "
                f"({a.dropped_chunks} dropped), {a.episodes_done} episodes, {a.intervention_steps} intervention steps, "
                f"{a.discarded} steps discarded")
        if silent > 10.0:
            self.get_logger().warning(f"no word from the learner for {silent:.0f} s; {text}")
        else:
            self.get_logger().info(text)

    def _subscribe_images(self) -> list[str]:
        """Camera topics (best-effort sensor QoS, as camera drivers publish) into the assembler."""
        topics = []
        for name, srcs in self.sources.items():
            for i, src in enumerate(srcs):
                if src.kind != "image":
                    continue

                def on_image(msg: Image, name: str = name, i: int = i, topic: str = src.topic) -> None:
                    try:
                        self.assembler.put(name, i, image_array(msg), to_sec(msg.header.stamp))
                    except ValueError as err:  # an encoding we do not read
                        self.get_logger().warning(f"{topic}: {err}", throttle_duration_sec=2.0)
                        return
                    self._on_message(topic)

                self.create_subscription(Image, src.topic, on_image, IMAGE_QOS)
                topics.append(src.topic)
        return topics

    def now(self) -> float:
        return to_sec(self.get_clock().now().to_msg())

    def _on_message(self, topic: str) -> None:
        if topic == self.trigger_topic and time.monotonic() - self.last_run >= 0.95 / self.control_rate:
            self._tick()

    def _tick(self) -> None:
        t0 = time.perf_counter()
        self.last_run = time.monotonic()
        actor = self.actor
        if actor is not None:
            try:
                actor.refresh()  # between ticks: this tick acts with one set of weights throughout
            except ValueError as err:  # weights of another task's network (ConfigError)
                self.get_logger().error(f"learner weights refused: {err}", throttle_duration_sec=5.0)
        now = self.now()
        obs, problems = self.assembler.assemble(now)
        stamps = [s for (name, _), (_, s) in self.assembler.latest.items() if not name.startswith("image_")]
        if actor is not None:
            actor.tick(obs, min(stamps, default=0.0), max(stamps, default=0.0), now)
        if obs is None:  # nothing is sent: the gate's watchdog holds the arm
            self.skipped += 1
            self.get_logger().warning("no command: " + "; ".join(problems[:3]), throttle_duration_sec=2.0)
            return
        if actor is not None:
            mean = not actor.explore or actor.evaluating()
            fallback = (lambda o: self.policy(o, deterministic=mean)) if self.policy is not None else None
            a = np.clip(actor.act(obs, fallback), -1.0, 1.0)
            self.pub_version.publish(Int64(data=actor.version))
        else:
            a = np.clip(self.policy(obs, deterministic=self.deterministic), -1.0, 1.0)
        stamp = max(s for _, s in self.assembler.latest.values())
        yaw_rate = float(a[self.yaw_index] * self.yaw_scale) if self.yaw_index is not None else 0.0
        self.pub_cmd.publish(twist_msg(a[:3] * self.v_scale, np.array([0.0, 0.0, yaw_rate]), self.base_frame, stamp))
        self.pub_grip.publish(Float64(data=float(a[-1])))
        self.pub_action.publish(Float64MultiArray(data=[float(x) for x in a]))
        self.latencies.append(time.perf_counter() - t0)


    def destroy_node(self) -> None:
        if self.actor is not None:
            self.actor.flush()
            self.actor.client.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from robot.nodes import spin

    spin(PolicyNode, args)


if __name__ == "__main__":
    main()
