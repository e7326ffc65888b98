"""Record teleoperated demonstrations (or policy runs with interventions) on a real arm: command
gate (human input through the safety layer) and recorder, next to the arm's own bringup.

    ros2 launch launch/record.launch.py robot:=franka embodiment_file:=arm_spec.json root:=data/demos
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PARAMS_DIR = str(Path(__file__).resolve().parent / "params")


def generate_launch_description() -> LaunchDescription:
    params = [PARAMS_DIR, "/deploy_", LaunchConfiguration("robot"), ".yaml"]
    record = PARAMS_DIR + "/record.yaml"
    pose = ("ee_pose", LaunchConfiguration("ee_pose_topic"))
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="franka", choices=["franka", "ur", "xarm"]),
        DeclareLaunchArgument("embodiment_file", description="the arm's EmbodimentSpec (JSON/YAML)"),
        DeclareLaunchArgument("root", default_value="data/demos", description="dataset directory (appended to)"),
        DeclareLaunchArgument("ee_pose_topic", default_value="ee_pose"),
        Node(executable="rewardforge-command-gate", name="command_gate", output="screen",
             parameters=[params, {"embodiment_file": LaunchConfiguration("embodiment_file")}], remappings=[pose]),
        Node(executable="rewardforge-recorder", name="recorder", output="screen",
             parameters=[record, {"root": LaunchConfiguration("root"),
                                  "embodiment_file": LaunchConfiguration("embodiment_file")}],
             remappings=[pose]),
    ])
