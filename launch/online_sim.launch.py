"""Online learning with a person in the loop, in simulation (HIL-SERL through ROS): the sim robot,
the command gate, the policy node as an actor of ``rewardforge-learner``, the scripted person
(takes over on the SpaceMouse topic when the policy strays; resets episodes), the reward monitor,
the recorder (episodes with intervention flags) and the learner itself.

    ros2 launch launch/online_sim.launch.py                           # reach, learner started here
    ros2 launch launch/online_sim.launch.py start_learner:=false      # learner runs elsewhere:
        rewardforge-learner task=panda_reach transitions_port=5555 weights_port=5556 \\
            intervention.enabled=true warmup_steps=500 eval_every=1000

The learner's transitions carry the executed action and the intervention flag; with
``intervention.enabled=true`` (and ``intervention.to_demos``, default true) the person's steps
also fill its demonstration buffer. The policy node acts randomly until the learner's first
weights (``checkpoint`` empty), then with the newest weights, and publishes ``policy/version``.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PARAMS = str(Path(__file__).resolve().parent / "params" / "sim.yaml")
ONLINE = str(Path(__file__).resolve().parent / "params" / "online_sim.yaml")


def generate_launch_description() -> LaunchDescription:
    task = LaunchConfiguration("task")
    host = LaunchConfiguration("learner_host")
    return LaunchDescription([
        DeclareLaunchArgument("task", default_value="rewardforge/PandaReach-v0", description="sim task id"),
        DeclareLaunchArgument("train_task", default_value="panda_reach",
                              description="the same task as a configs/task/<name>.yaml (the learner's)"),
        DeclareLaunchArgument("reward", default_value="keypoints",
                              description="reward monitor's configs/reward/<name>.yaml (shown live; "
                                          "the learner trains on the task reward)"),
        DeclareLaunchArgument("learner_host", default_value="127.0.0.1", description="where rewardforge-learner runs"),
        DeclareLaunchArgument("total_steps", default_value="5000", description="env steps the learner trains for"),
        DeclareLaunchArgument("start_learner", default_value="true", choices=["true", "false"],
                              description="false: start rewardforge-learner yourself"),
        DeclareLaunchArgument("root", default_value="data/online", description="recorder dataset directory"),
        # Ports: the policy node's transitions_port / weights_port in params/online_sim.yaml.
        ExecuteProcess(
            cmd=["rewardforge-learner", ["task=", LaunchConfiguration("train_task")], ["host=", host],
                 "transitions_port=5555", "weights_port=5556", ["total_steps=", LaunchConfiguration("total_steps")],
                 "intervention.enabled=true", "warmup_steps=500", "eval_every=1000", "idle_timeout_s=300"],
            output="screen", condition=IfCondition(LaunchConfiguration("start_learner"))),
        Node(executable="rewardforge-sim-robot", name="sim_robot", output="screen",
             parameters=[PARAMS, ONLINE, {"task": task}]),
        Node(executable="rewardforge-command-gate", name="command_gate", output="screen",
             parameters=[PARAMS, ONLINE, {"embodiment_task": task}]),
        Node(executable="rewardforge-policy", name="policy", output="screen",
             parameters=[PARAMS, ONLINE, {"checkpoint": "", "embodiment_task": task, "learner_host": host}]),
        Node(executable="rewardforge-scripted-person", name="scripted_person", output="screen",
             parameters=[ONLINE, {"embodiment_task": task}]),
        Node(executable="rewardforge-reward-monitor", name="reward_monitor", output="screen",
             parameters=[PARAMS, {"reward": LaunchConfiguration("reward"), "embodiment_task": task}]),
        Node(executable="rewardforge-recorder", name="recorder", output="screen",
             parameters=[ONLINE, {"root": LaunchConfiguration("root"), "embodiment_task": task}]),
    ])
