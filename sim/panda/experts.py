"""Scripted experts for the Panda tasks: ``make_expert(env)(obs) -> action``.

They read only the observation dict (privileged fields included: object pose,
keypoints, drawer opening) and keep a little phase state, so they also work as
demonstration sources. Position commands are proportional moves toward a waypoint,
``clip(gain * (waypoint - ee) / action_scale, -1, 1)``; the gain is below 1 because
the env integrates the actions into a target the arm follows with some lag.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

GAIN = 0.6
OPEN, CLOSED = 1.0, -1.0


class _Expert:
    def __init__(self, env) -> None:
        u = env.unwrapped
        self.scale = u.action_scale
        self.yaw = u.yaw
        self.keypoint_names = list(u.embodiment.extra["keypoint_names"])
        self.phase = 0
        self.timer = 0
        self._last_goal = None

    def reset(self) -> None:
        self.phase, self.timer = 0, 0

    def move(self, ee, waypoint, gripper, max_speed=1.0) -> np.ndarray:
        d = np.clip(GAIN * (np.asarray(waypoint) - ee) / self.scale, -max_speed, max_speed)
        act = [*d, 0.0] if self.yaw else list(d)
        return np.array([*act, gripper], dtype=np.float32)

    def keypoint(self, obs, name) -> np.ndarray:
        return np.asarray(obs["keypoints"][self.keypoint_names.index(name)], dtype=np.float64)

    def __call__(self, obs) -> np.ndarray:
        # A new episode shows up as a new goal: restart the state machine.
        goal = np.asarray(obs["goal_pos"]).copy()
        if self._last_goal is None or not np.allclose(goal, self._last_goal):
            self.reset()
        self._last_goal = goal
        return self.act(obs, np.asarray(obs["ee_pos"], dtype=np.float64), goal.astype(np.float64))

    def act(self, obs, ee, goal) -> np.ndarray:
        raise NotImplementedError


class ReachExpert(_Expert):
    def act(self, obs, ee, goal):
        return self.move(ee, goal, OPEN)


class PushExpert(_Expert):
    """Closed gripper: go behind the block (seen from the goal), descend, push along
    the block->goal line; back off and re-approach when the block drifts off line."""

    def act(self, obs, ee, goal):
        obj = np.asarray(obs["object_pos"], dtype=np.float64)
        half = max(obj[2], 0.01)
        to_goal = goal[:2] - obj[:2]
        dist = np.linalg.norm(to_goal)
        u = to_goal / max(dist, 1e-6)
        if dist < 0.015 or self.phase == 3:  # done: back off up and away, leave it there
            self.phase = 3 if dist < 0.03 else 0
            return self.move(ee, np.array([*(obj[:2] - u * (half + 0.05)), half + 0.08]), CLOSED)
        behind = obj[:2] - u * (half + 0.035)
        rel = ee[:2] - obj[:2]
        along, lateral = rel @ u, abs(rel @ np.array([-u[1], u[0]]))
        z_push = half
        if self.phase == 0:  # above the pre-push point
            wp = np.array([*behind, half + 0.08])
            if np.linalg.norm(ee[:2] - behind) < 0.015:
                self.phase = 1
            return self.move(ee, wp, CLOSED)
        if self.phase == 1:  # descend behind the block
            wp = np.array([*behind, z_push])
            if abs(ee[2] - z_push) < 0.01:
                self.phase = 2
            return self.move(ee, wp, CLOSED)
        # phase 2: push, carrot a few cm ahead of the contact point, capped at the goal
        if lateral > 0.025 or along > -half * 0.5:
            self.phase = 0
            return self.move(ee, np.array([*ee[:2], half + 0.08]), CLOSED)
        ahead = min(0.04, dist)
        wp2 = obj[:2] - u * (half + 0.01) + u * ahead
        return self.move(
            ee, np.array([*wp2, z_push]), CLOSED, max_speed=0.5 if dist > 0.05 else 0.25
        )


class PickPlaceExpert(_Expert):
    """Open, hover over the block, descend, close, lift, carry to the goal, hold."""

    def act(self, obs, ee, goal):
        obj = np.asarray(obs["object_pos"], dtype=np.float64)
        half = 0.02
        grip_open = float(obs["gripper"][0])
        if self.phase == 0:  # hover above the block
            if np.linalg.norm(ee[:2] - obj[:2]) < 0.01:
                self.phase = 1
            return self.move(ee, obj + [0, 0, 0.08], OPEN)
        if self.phase == 1:  # descend around it
            if abs(ee[2] - obj[2]) < 0.008 and np.linalg.norm(ee[:2] - obj[:2]) < 0.015:
                self.phase, self.timer = 2, 0
            return self.move(ee, obj, OPEN)
        if self.phase == 2:  # close
            self.timer += 1
            if self.timer >= 4 and grip_open < 0.9:
                self.phase = 3
            return self.move(ee, obj, CLOSED)
        # carrying: if the block slipped out, start over
        if np.linalg.norm(obj - ee) > 0.04:
            self.phase = 0
            return self.move(ee, ee + [0, 0, 0.05], OPEN)
        clearance = max(goal[2], half + 0.08)
        if self.phase == 3:  # lift
            if ee[2] > clearance - 0.02:
                self.phase = 4
            return self.move(ee, np.array([*ee[:2], clearance]), CLOSED)
        if self.phase == 4:  # carry at clearance height, then go to the goal
            if np.linalg.norm(ee[:2] - goal[:2]) < 0.02:
                self.phase = 5
            return self.move(ee, np.array([*goal[:2], clearance]), CLOSED)
        return self.move(ee, goal, CLOSED, max_speed=0.5)


class DrawerExpert(_Expert):
    """Closed gripper: hook the fingers between the handle bar and the drawer face,
    then pull straight back past the success opening."""

    HOOK = np.array([0.034, 0.0, -0.01])  # from the handle bar centre, base frame

    def act(self, obs, ee, goal):
        handle = self.keypoint(obs, "handle")
        hook = handle + self.HOOK
        opening = float(obs["drawer_pos"][0])
        if self.phase == 0:  # above the hook point
            if np.linalg.norm(ee[:2] - hook[:2]) < 0.01:
                self.phase = 1
            return self.move(ee, hook + [0, 0, 0.1], CLOSED)
        if self.phase == 1:  # lower behind the bar
            if abs(ee[2] - hook[2]) < 0.01:
                self.phase = 2
            return self.move(ee, hook, CLOSED)
        # pull: keep hooked height/lateral, move in -x past the goal
        if ee[2] > hook[2] + 0.03:  # lost the handle
            self.phase = 0
        target_x = goal[0] + self.HOOK[0] - 0.05
        wp = np.array([target_x if opening < 0.2 else ee[0], hook[1], hook[2]])
        return self.move(ee, wp, CLOSED, max_speed=0.6)


EXPERTS = {
    "reach": ReachExpert,
    "push": PushExpert,
    "pick_place": PickPlaceExpert,
    "drawer_open": DrawerExpert,
}


def make_expert(env) -> Callable[[dict], np.ndarray]:
    """Scripted policy for a Panda task env (wrapped or not). Call ``.reset()`` between
    episodes, or rely on it noticing the new goal."""
    return EXPERTS[env.unwrapped.task_name](env)
