"""Export episodes of our dataset format to a rosbag2 MCAP file, for ROS users' tools.

``rewardforge-export-mcap DATASET OUT.mcap [--episodes 0 3]`` writes, per frame, at the
frame's time (episode start + timestamp; episodes follow each other 1 s apart):

* ``/joint_states`` (sensor_msgs/JointState: joint1..7 and ``gripper``) when the spec has them,
* ``ee_pose`` (geometry_msgs/PoseStamped, gripper down rotated by ``ee_yaw``) when it has ``ee_pos``,
* ``rewardforge/observation/<field>`` (std_msgs/Float64MultiArray) for every state field,
* ``rewardforge/action``, ``rewardforge/policy_action`` (Float64MultiArray),
  ``rewardforge/intervention``, ``rewardforge/success`` (std_msgs/Bool), ``rewardforge/reward``
  (std_msgs/Float64),
* ``camera/<cam>/image_raw`` (sensor_msgs/Image, rgb8) with ``--images``.

Message definitions come from the installed ROS message packages' ``.msg`` files, with
their dependencies, as rosbag2 stores them (``ros2msg`` encoding, CDR messages).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from std_msgs.msg import Bool, Float64, Float64MultiArray

from robot.observation import ARM_JOINTS, GRIPPER_JOINT
from robot.ros_io import joint_state_msg, matrix_to_quat, pose_msg
from sim.panda.controller import R_DOWN, rot_z

PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
              "uint32", "int64", "uint64", "string", "wstring"}


def _msg_file(pkg: str, name: str) -> Path:
    for root in (Path(sys.prefix) / "share", *[Path(p) / ".." / ".." / ".." / "share" for p in sys.path if p]):
        f = root / pkg / "msg" / f"{name}.msg"
        if f.is_file():
            return f
    raise FileNotFoundError(f"no message definition {pkg}/msg/{name}.msg in the installed ROS packages")


def msgdef(datatype: str) -> str:
    """The rosbag2 ``ros2msg`` schema text of ``pkg/msg/Type``: its .msg text, then each
    dependency's as ``===...\\nMSG: pkg/Type\\n<text>``."""
    pkg, _, name = datatype.split("/")
    seen: dict[str, str] = {}

    def visit(pkg: str, name: str) -> str:
        text = _msg_file(pkg, name).read_text()
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or "=" in line.split()[-1] or (len(line.split()) > 2 and "=" in line):
                continue  # blank, comment or constant
            ftype = re.sub(r"\[.*\]$", "", line.split()[0])
            ftype = re.sub(r"<=\d+$", "", ftype)
            if ftype in PRIMITIVES:
                continue
            dep_pkg, dep_name = ftype.split("/") if "/" in ftype else (pkg, ftype)
            if dep_name == "Header" and "/" not in ftype:
                dep_pkg = "std_msgs"
            key = f"{dep_pkg}/{dep_name}"
            if key not in seen:
                seen[key] = ""
                seen[key] = visit(dep_pkg, dep_name)
        return text

    main = visit(pkg, name)
    parts = [main] + [f"{'=' * 80}\nMSG: {k}\n{v}" for k, v in seen.items()]
    return "\n".join(parts)


def export_mcap(dataset: str | Path, out: str | Path, episodes: list[int] | None = None, images: bool = False) -> int:
    """Write the episodes (default all) to ``out``; returns the number of messages."""
    from mcap_ros2.writer import Writer

    from common.episodes import Dataset

    ds = Dataset(dataset)
    spec = ds.spec
    names = set(spec.obs_names)
    schemas: dict[str, object] = {}
    count = 0
    with open(out, "wb") as f:
        writer = Writer(f)

        def write(topic: str, datatype: str, msg: object, t: float) -> None:
            nonlocal count
            if datatype not in schemas:
                schemas[datatype] = writer.register_msgdef(datatype.replace("/msg/", "/"), msgdef(datatype))
            ns = int(t * 1e9)
            writer.write_message(topic, schemas[datatype], msg, log_time=ns, publish_time=ns)
            count += 1

        t0 = 0.0
        for ep in episodes if episodes is not None else range(ds.num_episodes):
            data = ds.episode(ep, images=images)
            obs = ds.observations(ep, images=images)
            n = len(data["timestamp"])
            for k in range(n):
                t = t0 + float(data["timestamp"][k])
                for field in spec.state_fields:
                    v = np.asarray(obs[field.name][k], float).reshape(-1)
                    write(f"rewardforge/observation/{field.name}", "std_msgs/msg/Float64MultiArray",
                          Float64MultiArray(data=v.tolist()), t)
                if {"joint_pos", "joint_vel"} <= names:
                    grip = float(obs["gripper"][k].reshape(-1)[0]) if "gripper" in names else 0.0
                    write("/joint_states", "sensor_msgs/msg/JointState", joint_state_msg(
                        [*ARM_JOINTS, GRIPPER_JOINT], np.r_[obs["joint_pos"][k], grip],
                        np.r_[obs["joint_vel"][k], 0.0], t), t)
                if "ee_pos" in names:
                    yaw = float(obs["ee_yaw"][k].reshape(-1)[0]) if "ee_yaw" in names else 0.0
                    R = rot_z(yaw) @ R_DOWN  # the sim's ee_yaw convention
                    write("ee_pose", "geometry_msgs/msg/PoseStamped", pose_msg(obs["ee_pos"][k], matrix_to_quat(R),
                                                                                "base", t), t)
                write("rewardforge/action", "std_msgs/msg/Float64MultiArray",
                      Float64MultiArray(data=[float(x) for x in data["action"][k]]), t)
                write("rewardforge/policy_action", "std_msgs/msg/Float64MultiArray",
                      Float64MultiArray(data=[float(x) for x in data["action.policy"][k]]), t)
                write("rewardforge/intervention", "std_msgs/msg/Bool", Bool(data=bool(data["intervention"][k])), t)
                write("rewardforge/success", "std_msgs/msg/Bool", Bool(data=bool(data["next.success"][k])), t)
                write("rewardforge/reward", "std_msgs/msg/Float64", Float64(data=float(data["next.reward"][k])), t)
                if images:
                    from robot.ros_io import image_msg

                    for cam in ds.cameras:
                        write(f"camera/{cam}/image_raw", "sensor_msgs/msg/Image",
                              image_msg(obs[f"image_{cam}"][k], f"{cam}_optical_frame", t), t)
            t0 += n / ds.fps + 1.0
        writer.finish()
    return count


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--episodes", type=int, nargs="*", default=None)
    ap.add_argument("--images", action="store_true", help="also write camera frames (large)")
    args = ap.parse_args(argv)
    n = export_mcap(args.dataset, args.out, args.episodes, args.images)
    print(f"wrote {n} messages to {args.out}")


if __name__ == "__main__":
    main()
