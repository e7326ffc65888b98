"""Deploy a trained policy and the reward monitor to a real arm, behind the command gate.

    ros2 launch launch/deploy.launch.py robot:=franka checkpoint:=policy.pt \\
        embodiment_file:=panda_reach_spec.json ee_pose_topic:=/franka_robot_state_broadcaster/current_pose

The arm's own stack runs separately (its ros2_control bringup with MoveIt Servo, which takes
``geometry_msgs/TwistStamped`` on ``<servo>/delta_twist_cmds``). This file starts our side:
the command gate (the only publisher to the servo topic; safety layer + takeover), the policy
node and the reward monitor. Per-arm settings (servo topic, workspace box, speed limits,
joint names) are in params/deploy_<robot>.yaml; see launch/README.md for what each arm needs.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PARAMS_DIR = str(Path(__file__).resolve().parent / "params")


def generate_launch_description() -> LaunchDescription:
    params = [PARAMS_DIR, "/deploy_", LaunchConfiguration("robot"), ".yaml"]
    pose = ("ee_pose", LaunchConfiguration("ee_pose_topic"))
    joints = ("/joint_states", LaunchConfiguration("joint_states_topic"))
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="franka", choices=["franka", "ur", "xarm"],
                              description="which params/deploy_<robot>.yaml"),
        DeclareLaunchArgument("checkpoint", description="policy checkpoint (.pt)"),
        DeclareLaunchArgument("embodiment_file", description="the arm's EmbodimentSpec (JSON/YAML)"),
        DeclareLaunchArgument("reward", default_value="keypoints", description="configs/reward/<name>.yaml"),
        DeclareLaunchArgument("ee_pose_topic", default_value="ee_pose",
                              description="geometry_msgs/PoseStamped of the tool point in the base frame"),
        DeclareLaunchArgument("joint_states_topic", default_value="/joint_states"),
        Node(executable="rewardforge-command-gate", name="command_gate", output="screen",
             parameters=[params, {"embodiment_file": LaunchConfiguration("embodiment_file")}], remappings=[pose]),
        Node(executable="rewardforge-policy", name="policy", output="screen",
             parameters=[params, {"checkpoint": LaunchConfiguration("checkpoint"),
                                  "embodiment_file": LaunchConfiguration("embodiment_file")}],
             remappings=[pose, joints]),
        Node(executable="rewardforge-reward-monitor", name="reward_monitor", output="screen",
             parameters=[params, {"reward": LaunchConfiguration("reward"),
                                  "embodiment_file": LaunchConfiguration("embodiment_file")}],
             remappings=[pose, joints]),
    ])
