"""Recording through ROS: the recorder stores what the arm executed, what the policy wanted and when a
person took over; a SIGKILLed recorder loses only the episode in progress; the episode loads in the
training code and, exported, in an MCAP reader."""

import signal
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import Twist
from std_msgs.msg import Bool, Float64MultiArray, String

from common.episodes import Dataset, check_dataset
from policies.replay import ReplayBuffer
from robot.harness import Probe, processes
from robot.mcap_export import export_mcap
from robot.ros_io import COMMAND_QOS, STATE_QOS

POLICY = str(Path(__file__).parent / "data" / "panda_reach_policy.pt")
TASK = "rewardforge/PandaReach-v0"


def test_record_takeover_kill_and_reload(tmp_path):
    root = tmp_path / "demos"
    probe = Probe()
    probe.sub(Bool, "recorder/recording", STATE_QOS)
    probe.sub(Bool, "intervention", STATE_QOS)
    probe.sub(Float64MultiArray, "policy/action", STATE_QOS)
    cmd = probe.node.create_publisher(String, "recorder/command", STATE_QOS)
    human = probe.node.create_publisher(Twist, "spacenav/twist", COMMAND_QOS)
    try:
        with processes(("sim_robot", {"task": TASK, "seed": 5, "cameras": ["front"], "image_size": 32}),
                       ("command_gate", {}),
                       ("policy_node", {"checkpoint": POLICY, "embodiment_task": TASK}),
                       ("recorder", {"root": str(root), "embodiment_task": TASK, "cameras": ["front"],
                                     "image_size": 32, "success_topic": "sim/success", "source": "policy"})) as procs:
            recorder = procs[3]
            assert probe.spin_until(lambda: probe.last("recorder/recording") is not None
                                    and probe.last("policy/action") is not None, 60, procs)
            probe.spin_for(1.0)  # policy and cameras running
            cmd.publish(String(data="start"))
            assert probe.spin_until(lambda: probe.last("recorder/recording").data, 10, procs)
            # a second start is refused with a warning after an info from the same handler: the
            # recorder must live on (rclpy rejects a log call site whose severity changes)
            cmd.publish(String(data="start"))
            probe.spin_for(1.0)
            push = Twist()
            push.linear.z = 1.0
            end = time.monotonic() + 0.6  # a person lifts the arm for 0.6 s
            while time.monotonic() < end:
                human.publish(push)
                probe.spin_for(0.02)
            probe.spin_for(1.5)
            cmd.publish(String(data="success"))
            assert probe.spin_until(lambda: not probe.last("recorder/recording").data, 10, procs)
            # a second episode, then the recorder is killed in the middle of it
            cmd.publish(String(data="start"))
            assert probe.spin_until(lambda: probe.last("recorder/recording").data, 10, procs)
            probe.spin_for(0.8)
            recorder.send_signal(signal.SIGKILL)
            recorder.wait(timeout=10)
    finally:
        probe.close()

    problems, _ = check_dataset(root)
    assert not problems
    ds = Dataset(root)
    assert ds.num_episodes == 1  # the killed episode is gone, the finished one intact
    ep = ds.episode(0, images=True)
    n = len(ep["timestamp"])
    assert n >= 25 and ds.episodes[0]["success"] is True
    flags = np.asarray(ep["intervention"], bool)
    assert 2 <= flags.sum() < n  # the takeover was recorded, and only it
    act, pol = np.asarray(ep["action"]), np.asarray(ep["action.policy"])
    # executed: the person's lift (+z); afterwards they hold still for release_time, then the
    # command blends back to the policy's (still flagged while the person's weight is above 0)
    assert (act[flags, 2] > 0.1).sum() >= 3
    assert not np.allclose(act[flags], pol[flags])  # what the policy wanted differs there
    assert ep["observation.images.front"].shape == (n, 32, 32, 3)

    # the training code reads it: a replay buffer filled from the recorded transitions
    tr = ds.transitions()
    buf = ReplayBuffer(1000, ds.spec.state_dim, ds.spec.action.dim)
    for k in range(len(tr["reward"])):
        buf.add(tr["state"][k][None], tr["action"][k][None], tr["reward"][k][None], tr["next_state"][k][None],
                tr["terminated"][k][None], tr["truncated"][k][None])
    batch = buf.sample(8)
    assert batch["obs"].shape == (8, ds.spec.state_dim) and np.isfinite(batch["obs"]).all()

    # and ROS users' tools read the MCAP export
    from mcap_ros2.reader import read_ros2_messages

    out = tmp_path / "demo.mcap"
    export_mcap(root, out, images=True)
    topics: dict[str, list] = {}
    for m in read_ros2_messages(str(out)):
        topics.setdefault(m.channel.topic, []).append(m.ros_msg)
    assert len(topics["/joint_states"]) == n and len(topics["/joint_states"][0].name) == 8
    assert sum(b.data for b in topics["rewardforge/intervention"]) == flags.sum()
    img = topics["camera/front/image_raw"][0]
    assert (img.height, img.width, img.encoding) == (32, 32, "rgb8")
