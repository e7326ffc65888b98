"""The whole deploy path against the MuJoCo arm: sim robot, command gate (safety + takeover),
policy and reward monitor, speaking the same topics a real arm's controllers speak.

    ros2 launch launch/sim.launch.py checkpoint:=runs/.../checkpoints/final.pt
    ros2 launch launch/sim.launch.py checkpoint:=... task:=rewardforge/PandaPush-v0 reward:=keypoints

Run from a shell with ROS 2 sourced and the rewardforge environment on PATH (the nodes are
its console scripts; ``package`` is left out so launch_ros finds them on PATH).
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PARAMS = str(Path(__file__).resolve().parent / "params" / "sim.yaml")


def generate_launch_description() -> LaunchDescription:
    task = LaunchConfiguration("task")
    return LaunchDescription([
        DeclareLaunchArgument("task", default_value="rewardforge/PandaReach-v0", description="sim task id"),
        DeclareLaunchArgument("checkpoint", description="policy checkpoint (.pt) from rewardforge-train"),
        DeclareLaunchArgument("reward", default_value="keypoints", description="configs/reward/<name>.yaml"),
        DeclareLaunchArgument("human_input", default_value="spacenav", description="spacenav | joy | none"),
        Node(executable="rewardforge-sim-robot", name="sim_robot", output="screen",
             parameters=[PARAMS, {"task": task}]),
        Node(executable="rewardforge-command-gate", name="command_gate", output="screen",
             parameters=[PARAMS, {"human_input": LaunchConfiguration("human_input"), "embodiment_task": task}]),
        Node(executable="rewardforge-policy", name="policy", output="screen",
             parameters=[PARAMS, {"checkpoint": LaunchConfiguration("checkpoint"), "embodiment_task": task}]),
        Node(executable="rewardforge-reward-monitor", name="reward_monitor", output="screen",
             parameters=[PARAMS, {"reward": LaunchConfiguration("reward"), "embodiment_task": task}]),
    ])
