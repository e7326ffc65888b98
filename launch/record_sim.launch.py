"""Record teleoperated demonstrations on the MuJoCo arm: sim robot, command gate (the person's
SpaceMouse or gamepad drives the arm through the safety layer) and the recorder.

    ros2 launch launch/record_sim.launch.py root:=data/demos/reach
    ros2 service call /recorder/start std_srvs/srv/Trigger     # then mark_success / mark_failure
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PARAMS = str(Path(__file__).resolve().parent / "params" / "sim.yaml")
RECORD = str(Path(__file__).resolve().parent / "params" / "record.yaml")


def generate_launch_description() -> LaunchDescription:
    task = LaunchConfiguration("task")
    return LaunchDescription([
        DeclareLaunchArgument("task", default_value="rewardforge/PandaPickPlace-v0", description="sim task id"),
        DeclareLaunchArgument("root", default_value="data/demos", description="dataset directory (appended to)"),
        DeclareLaunchArgument("human_input", default_value="spacenav", description="spacenav | joy"),
        Node(executable="rewardforge-sim-robot", name="sim_robot", output="screen",
             parameters=[PARAMS, RECORD, {"task": task}]),
        Node(executable="rewardforge-command-gate", name="command_gate", output="screen",
             parameters=[PARAMS, {"human_input": LaunchConfiguration("human_input"), "embodiment_task": task}]),
        Node(executable="rewardforge-recorder", name="recorder", output="screen",
             parameters=[RECORD, {"root": LaunchConfiguration("root"), "embodiment_task": task,
                                  "success_topic": "sim/success"}]),
    ])
