"""An image (DrQ) policy through the ROS policy node, against the MuJoCo sim robot's camera, over real
rclpy and DDS on loopback; and the observation assembler's rules for camera images.

Latency and staleness do not need a trained policy: the checkpoint is built directly (random weights)."""

import numpy as np
import torch
import yaml
from geometry_msgs.msg import PoseStamped, TwistStamped
from omegaconf import OmegaConf
from sensor_msgs.msg import Image

import sim
from policies import checkpoint
from policies.config import SACConfig
from policies.pixels import PixelSAC
from robot.harness import Probe, processes
from robot.observation import ObservationAssembler, load_sources, with_cameras
from robot.ros_io import COMMAND_QOS, IMAGE_QOS, STATE_QOS

TASK = "rewardforge/PandaReach-v0"
SIZE = 48


def pixel_checkpoint(path, size: int = SIZE):
    """A DrQ checkpoint for PandaReach with the front camera (random weights)."""
    env = sim.make(TASK, cameras=["front"], image_size=size)
    spec = env.unwrapped.embodiment
    env.close()
    torch.manual_seed(0)
    agent_cfg = OmegaConf.structured(SACConfig(name="drq", hidden=[64, 64], cameras=["front"], feature_dim=32))
    agent = PixelSAC({"image_front": (size, size, 3)}, spec.state_dim, spec.action.dim, agent_cfg)
    cfg = {"agent": OmegaConf.to_container(agent_cfg), "seed": 0, "task": {"env_id": TASK}}
    checkpoint.save(path, agent, cfg, spec, step=0)
    return spec


def test_assembler_keeps_images_as_uint8_with_their_own_staleness_and_size_check():
    env = sim.make(TASK)
    spec = with_cameras(env.unwrapped.embodiment, ["front"], 8)
    env.close()
    sources = load_sources(spec, None, images=True)
    assert sources["image_front"][0].topic == "camera/front/image_raw"
    asm = ObservationAssembler(spec, sources, staleness=0.25, max_skew=0.15, image_staleness=0.3)
    state = {f.name: np.zeros(f.shape) for f in spec.state_fields}
    for name, srcs in sources.items():
        for i, _ in enumerate(srcs):
            if name != "image_front":
                asm.put(name, i, state[name][i] if name == "keypoints" else state[name], 10.0)
    obs, problems = asm.assemble(10.0)
    assert obs is None and "image_front: nothing received on camera/front/image_raw" in problems
    asm.put("image_front", 0, np.full((8, 8, 3), 200), 9.85)  # 150 ms older than the state: fine for a camera
    obs, problems = asm.assemble(10.0)
    assert problems == [] and obs["image_front"].dtype == np.uint8 and obs["image_front"][0, 0, 0] == 200
    obs, problems = asm.assemble(10.2)  # image 0.35 s old (> 0.3), state 0.2 s (< 0.25)
    assert obs is None and len(problems) == 1 and problems[0].startswith("image_front: camera/front/image_raw is 0.35")
    asm.put("image_front", 0, np.zeros((16, 16, 3)), 10.0)
    obs, problems = asm.assemble(10.0)
    assert obs is None and "spec says (8, 8, 3)" in problems[0]
    # a state-only assembler of the same spec ignores the cameras (recorder, reward monitor)
    assert ObservationAssembler(spec, load_sources(spec, None)).fields == spec.state_fields


def test_image_policy_drives_the_sim_robot_and_a_stale_camera_stops_it(tmp_path):
    ckpt = tmp_path / "drq.pt"
    pixel_checkpoint(ckpt)
    # The policy reads the sim's camera through a relay in this process, so the test can make the
    # camera go stale while the arm state keeps flowing.
    obs_map = tmp_path / "obs_map.yaml"
    obs_map.write_text(yaml.safe_dump({"image_front": {"kind": "image", "topic": "relay/front/image_raw",
                                                       "part": "rgb"}}))
    probe = Probe("image_probe")
    relay = {"on": True, "frames": 0}
    pub = probe.node.create_publisher(Image, "relay/front/image_raw", IMAGE_QOS)

    def forward(msg):
        if relay["on"]:
            relay["frames"] += 1
            pub.publish(msg)

    probe.node.create_subscription(Image, "camera/front/image_raw", forward, IMAGE_QOS)
    probe.sub(TwistStamped, "policy/cmd", COMMAND_QOS)
    probe.sub(PoseStamped, "ee_pose", STATE_QOS)
    try:
        with processes(("sim_robot", {"task": TASK, "cameras": ["front"], "image_size": SIZE, "camera_rate": 10.0}),
                       # Limits for a loaded 2-core box, where the sim robot renders a frame in ~0.1-0.2 s
                       # on the thread that also publishes its state.
                       ("policy_node", {"checkpoint": str(ckpt), "embodiment_task": TASK,
                                        "observation_map": str(obs_map), "staleness": 0.6, "max_skew": 0.5,
                                        "image_staleness": 0.6})) as procs:
            cmds = lambda: len(probe.msgs.get("policy/cmd", []))  # noqa: E731
            assert probe.spin_until(lambda: cmds() >= 10, 90, procs), \
                f"no commands from the image policy ({relay['frames']} frames relayed)"
            t = np.array(probe.times["policy/cmd"])
            assert np.median(np.diff(t)) > 0.08  # at most the 10 Hz control rate (less when frames are late)
            assert any(abs(m.twist.linear.x) + abs(m.twist.linear.y) + abs(m.twist.linear.z) > 0
                       for m in probe.msgs["policy/cmd"])

            relay["on"] = False  # the camera goes stale; the arm state does not
            probe.spin_for(1.0)  # image_staleness 0.6 s, plus commands already in flight
            n, poses = cmds(), len(probe.msgs["ee_pose"])
            probe.spin_for(1.5)
            assert cmds() == n, "the policy kept publishing with a stale camera"
            # the arm state stayed fresh (by the node's 0.6 s limit): it is the camera that stopped the policy
            gaps = np.diff(probe.times["ee_pose"][poses - 1:])
            assert len(gaps) > 5 and gaps.max() < 0.6

            relay["on"] = True  # frames again: commands resume
            assert probe.spin_until(lambda: cmds() >= n + 5, 10, procs)
    finally:
        probe.close()


def test_policy_node_refuses_an_image_size_other_than_the_checkpoints(tmp_path):
    """The node's image_size parameter is checked against the checkpoint's spec at start."""
    import subprocess
    import sys

    from robot.harness import ros_args

    ckpt = tmp_path / "drq.pt"
    pixel_checkpoint(ckpt, 32)
    out = subprocess.run([sys.executable, "-m", "robot.nodes.policy_node",
                          *ros_args({"checkpoint": str(ckpt), "embodiment_task": TASK, "image_size": 64})],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "refuses to run" in out.stderr and "image_front" in out.stderr and "(64, 64, 3)" in out.stderr
