"""The four Panda tabletop tasks: reach, push, pick-and-place, drawer opening.

Each task defines its scene additions, its seeded placement/physics randomisation,
its success test, a ground-truth ``progress`` in [0, 1] (used to judge learned rewards)
and a hand-written dense "expert" reward. Reward scales: every component is a distance
in metres (negative), a 0/1 indicator times a small bonus, or an opening fraction, so
per-step rewards stay roughly within [-1.5, 1.5]; ``info["reward_components"]`` holds
the terms (their sum is the reward).
"""

from __future__ import annotations

import mujoco
import numpy as np

from common.spec import ObsField
from sim.panda.base import PandaEnv
from sim.panda.scene import (
    CABINET_HALF,
    DRAWER_TRAVEL,
    add_block,
    add_drawer,
    add_goal_marker,
)

# Where blocks and goals are placed (base frame, metres).
TABLE_XY_LOW = np.array([0.40, -0.15])
TABLE_XY_HIGH = np.array([0.60, 0.15])
BLOCK_HALF = 0.02
SUCCESS_BONUS = 0.25


def _goal_field() -> ObsField:
    return ObsField("goal_pos", (3,), frame="base", units="m", description="goal position")


def _object_fields() -> tuple[ObsField, ...]:
    return (
        ObsField(
            "object_pos", (3,), frame="base", units="m", privileged=True, description="block centre"
        ),
        ObsField(
            "object_quat",
            (4,),
            frame="base",
            units="1",
            privileged=True,
            description="block orientation (w, x, y, z)",
        ),
    )


class PandaReachEnv(PandaEnv):
    """Move the fingertips to a random point; success within ``success_threshold`` (3 cm).

    Reward: ``-|pinch - goal|`` (m) + 0.25 on success.
    """

    task_name = "reach"
    keypoint_names = ("pinch", "goal")
    GOAL_LOW = np.array([0.35, -0.25, 0.05])
    GOAL_HIGH = np.array([0.70, 0.25, 0.35])

    def __init__(self, success_threshold: float = 0.03, **kwargs) -> None:
        self.success_threshold = float(success_threshold)
        super().__init__(**kwargs)

    def _build(self, spec: mujoco.MjSpec) -> None:
        add_goal_marker(spec, radius=0.015)

    def _init_task(self) -> None:
        self._goal_mocap = self.model.body("goal").mocapid[0]

    def _task_fields(self):
        return (_goal_field(),)

    def _task_obs(self):
        return {"goal_pos": self.goal.astype(np.float32)}

    @property
    def goal(self) -> np.ndarray:
        return self.data.mocap_pos[self._goal_mocap].copy()

    def _reset_task(self, rng):
        self.data.mocap_pos[self._goal_mocap] = rng.uniform(self.GOAL_LOW, self.GOAL_HIGH)

    def _reset_extra(self):
        self._d0 = max(np.linalg.norm(self.ee_pos - self.goal), 1e-6)

    def _evaluate(self):
        dist = float(np.linalg.norm(self.ee_pos - self.goal))
        success = dist < self.success_threshold
        comps = {"distance": -dist, "success": SUCCESS_BONUS * float(success)}
        progress = 1.0 if success else float(np.clip(1.0 - dist / self._d0, 0.0, 1.0))
        return sum(comps.values()), comps, success, progress


GRASP_MARGIN = 1e-3  # m: a pad this close to the block counts as touching it
GRASP_SEARCH = 0.01  # m: distances beyond this are not resolved (cheaper)


class _BlockTask(PandaEnv):
    """Shared by push and pick-place: one free cube ("object") and a goal marker."""

    keypoint_names = ("pinch", "object", "goal")

    def __init__(self, success_threshold: float = 0.04, **kwargs) -> None:
        self.success_threshold = float(success_threshold)
        super().__init__(**kwargs)

    def _build(self, spec):
        add_block(spec, half_size=BLOCK_HALF)
        add_goal_marker(spec, radius=0.02)

    def _init_task(self):
        m = self.model
        self._goal_mocap = m.body("goal").mocapid[0]
        self._obj_body = m.body("object").id
        self._obj_geom = m.geom("object").id
        self._obj_qadr = m.joint("object").qposadr[0]
        self._pad_geoms = (
            tuple(m.geom(n).id for n in ("left_pad1", "left_pad2")),
            tuple(m.geom(n).id for n in ("right_pad1", "right_pad2")),
        )
        self.block_half = BLOCK_HALF

    def _task_fields(self):
        return (_goal_field(), *_object_fields())

    def _task_obs(self):
        q = self.data.qpos[self._obj_qadr : self._obj_qadr + 7]
        return {
            "goal_pos": self.goal.astype(np.float32),
            "object_pos": q[:3].astype(np.float32),
            "object_quat": q[3:].astype(np.float32),
        }

    @property
    def goal(self) -> np.ndarray:
        return self.data.mocap_pos[self._goal_mocap].copy()

    @property
    def object_pos(self) -> np.ndarray:
        return self.data.qpos[self._obj_qadr : self._obj_qadr + 3].copy()

    def _place_block(self, rng) -> np.ndarray:
        m, gid, bid = self.model, self._obj_geom, self._obj_body
        half = BLOCK_HALF
        if self.randomize_physics:
            half = BLOCK_HALF * rng.uniform(0.9, 1.1)
            mass = rng.uniform(0.05, 0.15)
            m.geom_size[gid] = half
            m.geom_rbound[gid] = half * np.sqrt(3.0)
            m.geom_aabb[gid, 3:] = half
            m.body_mass[bid] = mass
            m.body_inertia[bid] = mass * (2 * half) ** 2 / 6.0
            m.geom_friction[gid, 0] = rng.uniform(0.8, 1.2)
        self.block_half = half
        xy = rng.uniform(TABLE_XY_LOW, TABLE_XY_HIGH)
        yaw = rng.uniform(-0.3, 0.3)
        q = self.data.qpos[self._obj_qadr : self._obj_qadr + 7]
        q[:3] = (xy[0], xy[1], half)
        q[3:] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        return xy

    def _sample_goal_xy(self, rng, obj_xy, min_dist=0.1, max_dist=0.22) -> np.ndarray:
        for _ in range(100):
            g = rng.uniform(TABLE_XY_LOW - 0.05, TABLE_XY_HIGH + 0.05)
            if min_dist <= np.linalg.norm(g - obj_xy) <= max_dist:
                return g
        return obj_xy + np.array([0.0, min_dist if obj_xy[1] < 0 else -min_dist])

    def grasped(self) -> bool:
        """Both fingers' pads are within ``GRASP_MARGIN`` of the block.

        Why a distance and not the contact list: a held block's pad contacts chatter at the
        physics step, so at the instant the step ends one side often has no contact although the
        block is held (measured with the scripted expert carrying the block: 8.8% of carried steps
        read "not grasped" from contacts, 0.4% from distances within 1 mm). That flicker put
        0.25 reward noise on the grasp term and made held blocks look dropped."""
        m, d, obj = self.model, self.data, self._obj_geom
        return all(
            min(mujoco.mj_geomDistance(m, d, g, obj, GRASP_SEARCH, None) for g in side) <= GRASP_MARGIN
            for side in self._pad_geoms
        )

    def lifted(self, grasped: bool | None = None) -> bool:
        """Grasped with the block at least 1 cm off the table (pass ``grasped`` when already known)."""
        grasped = self.grasped() if grasped is None else grasped
        return bool(grasped and self.object_pos[2] > self.block_half + 0.01)


class PandaPushEnv(_BlockTask):
    """Push a block across the table to a goal on the table; success when the block's
    xy distance to the goal is under ``success_threshold`` (4 cm).

    Reward: ``-0.5 |pinch - block| - |block - goal|_xy`` + 0.25 on success.
    """

    task_name = "push"

    def _reset_task(self, rng):
        xy = self._place_block(rng)
        g = self._sample_goal_xy(rng, xy)
        self.data.mocap_pos[self._goal_mocap] = (g[0], g[1], self.block_half)

    def _reset_extra(self):
        self._d0 = max(np.linalg.norm((self.object_pos - self.goal)[:2]), 1e-6)

    def _evaluate(self):
        obj = self.object_pos
        d_push = float(np.linalg.norm((obj - self.goal)[:2]))
        d_reach = float(np.linalg.norm(self.ee_pos - obj))
        success = d_push < self.success_threshold
        comps = {
            "reach": -0.5 * d_reach,
            "push": -d_push,
            "success": SUCCESS_BONUS * float(success),
        }
        progress = 1.0 if success else float(np.clip(1.0 - d_push / self._d0, 0.0, 1.0))
        return sum(comps.values()), comps, success, progress


class PandaPickPlaceEnv(_BlockTask):
    """Grasp the block, lift it and bring it to a goal that is on the table or up to
    ``max_goal_height`` above it; success when the block centre is within
    ``success_threshold`` (4 cm) of the goal.

    Reward: ``-0.5 |pinch - block| + 0.25 [grasped] - |block - goal|`` + 0.25 on success.
    Progress: 0.2 approach + 0.2 grasp-and-lift + 0.6 placement.
    """

    task_name = "pick_place"

    def __init__(self, max_goal_height: float = 0.2, **kwargs) -> None:
        self.max_goal_height = float(max_goal_height)
        super().__init__(**kwargs)

    def _reset_task(self, rng):
        xy = self._place_block(rng)
        g = self._sample_goal_xy(rng, xy)
        z = self.block_half + (
            rng.uniform(0.03, self.max_goal_height) if rng.uniform() < 0.8 else 0.0
        )
        self.data.mocap_pos[self._goal_mocap] = (g[0], g[1], z)

    def _reset_extra(self):
        self._d0_place = max(np.linalg.norm(self.object_pos - self.goal), 1e-6)
        self._d0_reach = max(np.linalg.norm(self.ee_pos - self.object_pos), 1e-6)

    def _evaluate(self):
        obj = self.object_pos
        d_place = float(np.linalg.norm(obj - self.goal))
        d_reach = float(np.linalg.norm(self.ee_pos - obj))
        grasped = self.grasped()
        lifted = self.lifted(grasped)
        success = d_place < self.success_threshold
        comps = {
            "reach": -0.5 * d_reach,
            "grasp": 0.25 * float(grasped),
            "place": -d_place,
            "success": SUCCESS_BONUS * float(success),
        }
        if success:
            progress = 1.0
        else:
            approach = np.clip(1.0 - d_reach / self._d0_reach, 0.0, 1.0)
            place = np.clip(1.0 - d_place / self._d0_place, 0.0, 1.0)
            progress = 0.2 * approach + 0.2 * float(lifted) + 0.6 * place * float(lifted)
        return sum(comps.values()), comps, success, float(progress)


class PandaDrawerOpenEnv(PandaEnv):
    """Pull a drawer open by its bar handle; success when the opening exceeds
    ``success_opening`` (0.15 m of the 0.25 m travel).

    The cabinet faces the robot; the drawer slides towards it (-x). ``goal_pos`` is
    where the handle is at the success opening. Reward:
    ``-0.5 |pinch - handle| + opening / success_opening`` (capped at 1) + 0.25 on success.
    Progress: 0.2 approach + 0.8 opening fraction.
    """

    task_name = "drawer_open"
    keypoint_names = ("pinch", "handle", "goal")

    def __init__(self, success_opening: float = 0.15, **kwargs) -> None:
        if not 0.0 < success_opening < DRAWER_TRAVEL:
            raise ValueError(f"success_opening must be in (0, {DRAWER_TRAVEL})")
        self.success_opening = float(success_opening)
        super().__init__(**kwargs)

    def _build(self, spec):
        add_drawer(spec)
        add_goal_marker(spec, radius=0.01, rgba=(0.1, 0.8, 0.1, 0.0))

    def _init_task(self):
        m = self.model
        self._cab_body = m.body("cabinet").id
        self._drawer_qadr = m.joint("drawer").qposadr[0]
        self._drawer_dof = m.joint("drawer").dofadr[0]
        self._goal_mocap = m.body("goal").mocapid[0]
        self._handle = m.site("handle").id

    def _task_fields(self):
        return (
            _goal_field(),
            ObsField(
                "drawer_pos",
                (1,),
                frame="none",
                units="m",
                privileged=True,
                description="drawer opening, 0 = closed",
            ),
        )

    def _task_obs(self):
        return {
            "goal_pos": self.data.mocap_pos[self._goal_mocap].astype(np.float32),
            "drawer_pos": np.array([self.opening], dtype=np.float32),
        }

    @property
    def opening(self) -> float:
        return float(self.data.qpos[self._drawer_qadr])

    def _reset_task(self, rng):
        m = self.model
        x = 0.72 + rng.uniform(-0.03, 0.03)
        y = rng.uniform(-0.12, 0.12)
        m.body_pos[self._cab_body] = (x, y, CABINET_HALF[2] + 0.02)
        if self.randomize_physics:
            m.dof_damping[self._drawer_dof] = 2.0 * rng.uniform(0.7, 1.3)
            m.dof_frictionloss[self._drawer_dof] = 0.5 * rng.uniform(0.7, 1.3)
        self.data.qpos[self._drawer_qadr] = rng.uniform(0.0, 0.02)
        mujoco.mj_kinematics(m, self.data)
        handle_closed = self.data.site_xpos[self._handle] + np.array([self.opening, 0.0, 0.0])
        self.data.mocap_pos[self._goal_mocap] = handle_closed - np.array(
            [self.success_opening, 0.0, 0.0]
        )

    def _reset_extra(self):
        self._d0 = max(np.linalg.norm(self.ee_pos - self.site_pos("handle")), 1e-6)

    def _evaluate(self):
        d_reach = float(np.linalg.norm(self.ee_pos - self.data.site_xpos[self._handle]))
        frac = float(np.clip(self.opening / self.success_opening, 0.0, 1.0))
        success = self.opening > self.success_opening
        comps = {"reach": -0.5 * d_reach, "open": frac, "success": SUCCESS_BONUS * float(success)}
        if success:
            progress = 1.0
        else:
            progress = 0.2 * float(np.clip(1.0 - d_reach / self._d0, 0.0, 1.0)) + 0.8 * frac
        return sum(comps.values()), comps, success, float(progress)
