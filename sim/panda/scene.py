"""Programmatic MJCF for the Panda tabletop: gym_hil's Panda + Robotiq 2F-85, a table,
lights, a fixed scene camera, and per-task additions (objects, goal marker, drawer).

The robot model is loaded from the installed ``gym_hil`` package (Apache-2.0), never
copied. The robot base (``link0``) sits at the world origin on the table top (z = 0),
so the robot base frame and the world frame coincide.

Collision bits: arm and gripper geoms get ``contype=2, conaffinity=1`` and everything
else ``contype=1, conaffinity=3``. MuJoCo makes a contact when
``(ct1 & ca2) or (ct2 & ca1)``, so the robot touches the table and the objects but
not itself (saves most of the mesh-mesh collision work; the workspace box keeps the
arm away from self-collision configurations anyway).
"""

from __future__ import annotations

import os
from functools import cache

import mujoco
import numpy as np

# Home joint configuration: pinch at ~(0.45, 0, 0.25) m, gripper pointing down, yaw 0.
HOME_QPOS = np.array([0.0, -0.2535, 0.0, -2.4383, 0.0, 2.1848, 0.7854])

ROBOT_CT, ROBOT_CA = 2, 1
WORLD_CT, WORLD_CA = 1, 3


@cache
def panda_xml_path() -> str:
    import gym_hil

    path = os.path.join(os.path.dirname(gym_hil.__file__), "assets", "panda.xml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"gym_hil is installed but ships no Panda model at {path}")
    return path


def look_at_quat(pos, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera at ``pos`` looking at ``target``."""
    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    right = np.cross(f, up)
    right /= np.linalg.norm(right)
    z = -f
    y = np.cross(z, right)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([right, y, z]).ravel())
    return quat


def base_spec(table_rgba=(0.55, 0.45, 0.35, 1.0)) -> mujoco.MjSpec:
    """Panda on a table, lights and cameras; tasks add their bodies to the result."""
    spec = mujoco.MjSpec.from_file(panda_xml_path())
    spec.modelname = "panda_tabletop"
    spec.option.timestep = 0.002
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0  # stiffer friction: grasped blocks do not slip out
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480
    spec.visual.quality.shadowsize = 0  # cheap rendering: no shadow maps
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]

    for geom in spec.geoms:
        if geom.contype or geom.conaffinity:
            geom.contype, geom.conaffinity = ROBOT_CT, ROBOT_CA

    wb = spec.worldbody
    wb.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.75, 0.75, 0.02],
        pos=[0.35, 0.0, -0.02],
        rgba=list(table_rgba),
        contype=WORLD_CT,
        conaffinity=WORLD_CA,
        friction=[1.0, 0.005, 0.0001],
    )
    wb.add_light(
        name="top",
        pos=[0.4, 0.0, 2.0],
        dir=[0.0, 0.0, -1.0],
        diffuse=[0.7, 0.7, 0.7],
        castshadow=False,
    )
    wb.add_light(
        name="side",
        pos=[1.2, -1.0, 1.2],
        dir=[-0.6, 0.6, -0.6],
        diffuse=[0.3, 0.3, 0.3],
        castshadow=False,
    )

    # Fixed scene cameras: "front" for videos and perception, "side" as a second view.
    for name, pos, target in (
        ("front", (1.45, -1.2, 1.1), (0.35, 0.0, 0.25)),
        ("side", (0.45, -1.25, 0.5), (0.45, 0.0, 0.15)),
    ):
        wb.add_camera(name=name, pos=list(pos), quat=list(look_at_quat(pos, target)), fovy=45.0)
    return spec


def add_goal_marker(spec: mujoco.MjSpec, radius: float = 0.02, rgba=(0.1, 0.8, 0.1, 0.5)) -> None:
    """A mocap body "goal" with a visual-only sphere and a site "goal" (moved at reset)."""
    body = spec.worldbody.add_body(name="goal", mocap=True, pos=[0.5, 0.0, 0.2])
    body.add_geom(
        name="goal",
        type=mujoco.mjtGeom.mjGEOM_SPHERE,
        size=[radius, 0, 0],
        rgba=list(rgba),
        contype=0,
        conaffinity=0,
        group=0,
    )
    body.add_site(name="goal", size=[0.005, 0, 0], rgba=[0, 0, 0, 0])


def add_block(
    spec: mujoco.MjSpec, half_size: float = 0.02, mass: float = 0.1, rgba=(0.8, 0.2, 0.2, 1.0)
) -> None:
    """A free cube "object" with a site "object" at its centre."""
    body = spec.worldbody.add_body(name="object", pos=[0.5, 0.0, half_size])
    body.add_freejoint(name="object")
    body.add_geom(
        name="object",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[half_size] * 3,
        mass=mass,
        rgba=list(rgba),
        contype=WORLD_CT,
        conaffinity=WORLD_CA,
        friction=[1.0, 0.005, 0.0001],
        condim=4,
    )
    body.add_site(name="object", size=[0.005, 0, 0], rgba=[0, 0, 0, 0])


# Drawer geometry (metres). The cabinet faces the robot (-x); the drawer slides out along -x.
CABINET_HALF = np.array([0.12, 0.15, 0.08])
HANDLE_OFFSET = (
    0.06  # handle bar centre in front of the drawer face (room to hook fingers behind it)
)
HANDLE_HEIGHT = 0.10  # handle z above the table
DRAWER_TRAVEL = 0.25


def add_drawer(spec: mujoco.MjSpec, rgba=(0.35, 0.5, 0.7, 1.0)) -> None:
    """A fixed cabinet "cabinet" with a sliding drawer (slide joint "drawer") and a bar
    handle (site "handle"). Opening distance = drawer joint position (0 = closed)."""
    h = CABINET_HALF
    cab = spec.worldbody.add_body(name="cabinet", pos=[0.72, 0.0, h[2] + 0.02])

    def box(body, name, size, pos, color, collide=True):
        body.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=list(size),
            pos=list(pos),
            rgba=list(color),
            contype=WORLD_CT if collide else 0,
            conaffinity=WORLD_CA if collide else 0,
        )

    # Cabinet shell: top, bottom, two sides, back (open at the front, -x).
    t = 0.01
    box(cab, "cab_top", [h[0], h[1], t], [0, 0, h[2] - t], rgba)
    box(cab, "cab_bottom", [h[0], h[1], t], [0, 0, -h[2] + t], rgba)
    box(cab, "cab_left", [h[0], t, h[2]], [0, h[1] - t, 0], rgba)
    box(cab, "cab_right", [h[0], t, h[2]], [0, -h[1] + t, 0], rgba)
    box(cab, "cab_back", [t, h[1], h[2]], [h[0] - t, 0, 0], rgba)
    # Legs to the table (visual only).
    box(
        cab,
        "cab_leg",
        [h[0], h[1] * 0.9, 0.01],
        [0, 0, -h[2] - 0.01],
        (0.2, 0.2, 0.2, 1),
        collide=False,
    )

    dr = cab.add_body(name="drawer", pos=[0, 0, 0])
    dr.add_joint(
        name="drawer",
        type=mujoco.mjtJoint.mjJNT_SLIDE,
        axis=[-1, 0, 0],
        range=[0.0, DRAWER_TRAVEL],
        damping=2.0,
        frictionloss=0.5,
        armature=0.05,
    )
    inner = h - np.array([0.0, 2 * t + 0.003, 2 * t + 0.003])
    dcolor = (0.85, 0.8, 0.7, 1.0)
    # Drawer: front panel, bottom, sides, back.
    box(dr, "drawer_front", [t, inner[1], inner[2]], [-h[0] + t, 0, 0], dcolor)
    box(dr, "drawer_bottom", [h[0] - 2 * t, inner[1], t / 2], [0, 0, -inner[2] + t / 2], dcolor)
    box(
        dr,
        "drawer_left",
        [h[0] - 2 * t, t / 2, inner[2] * 0.7],
        [0, inner[1] - t / 2, -inner[2] * 0.3],
        dcolor,
    )
    box(
        dr,
        "drawer_right",
        [h[0] - 2 * t, t / 2, inner[2] * 0.7],
        [0, -inner[1] + t / 2, -inner[2] * 0.3],
        dcolor,
    )
    box(
        dr,
        "drawer_back",
        [t / 2, inner[1], inner[2] * 0.7],
        [h[0] - 2 * t, 0, -inner[2] * 0.3],
        dcolor,
    )
    # Bar handle: horizontal along y, on two standoffs, in front of the panel.
    hz = HANDLE_HEIGHT - (h[2] + 0.02)  # handle height relative to cabinet centre
    hx = -h[0] - HANDLE_OFFSET
    dr.add_geom(
        name="handle",
        type=mujoco.mjtGeom.mjGEOM_CAPSULE,
        fromto=[hx, -0.06, hz, hx, 0.06, hz],
        size=[0.008, 0, 0],
        rgba=[0.2, 0.2, 0.2, 1],
        contype=WORLD_CT,
        conaffinity=WORLD_CA,
        friction=[1.5, 0.005, 0.0001],
        condim=4,
    )
    for side, y in (("l", 0.06), ("r", -0.06)):
        dr.add_geom(
            name=f"handle_post_{side}",
            type=mujoco.mjtGeom.mjGEOM_CAPSULE,
            fromto=[hx, y, hz, -h[0], y, hz],
            size=[0.007, 0, 0],
            rgba=[0.2, 0.2, 0.2, 1],
            contype=WORLD_CT,
            conaffinity=WORLD_CA,
        )
    dr.add_site(name="handle", pos=[hx, 0, hz], size=[0.005, 0, 0], rgba=[0, 0, 0, 0])
    spec.add_exclude(bodyname1="cabinet", bodyname2="drawer")
