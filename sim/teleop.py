"""Teleoperate a Panda task in simulation and record the episodes as demonstrations.

    uv run rewardforge-teleop task=panda_pick_place                      # keyboard, in the MuJoCo viewer
    uv run rewardforge-teleop task=panda_push device=gamepad gamepad.path=/dev/input/js0
    uv run rewardforge-teleop task=panda_reach device=spacemouse speed=0.3 episodes=20

``task=`` picks a config from ``configs/task/``; the other keys are in ``configs/teleop.yaml``
(schema: :class:`TeleopConfig`). Every control step the input device is read into one
:class:`TeleopCommand` (6 normalised axes x y z roll pitch yaw in [-1, 1], in SpaceMouse
order as in ``robot/takeover.py``; a gripper request; episode-control requests), the
command becomes the env action (:class:`ActionMapper`), the env steps, and the frame goes
to the episode writer (``common.episodes``, source ``teleop``, the executed action).

Episode control: *save* (label = the env's ``info["success"]`` at the last step), *save as
success*, *save as failure*, *discard*, *quit*. Optional automatic ends: the env's
success held for ``success_hold`` seconds (saved as success) and the time limit
(``max_episode_steps``; saved with the env's label, or dropped with
``save_on_time_limit=false``). A person's end of a failed episode is stored as a
truncation (``next.truncated``: the state was not terminal), a successful one as terminal.

Crash safety is the writer's: each saved episode is committed when saved, so a crash or
Ctrl+C loses only the episode in progress (see ``common/episodes/writer.py``).

Devices (all pure Python, nothing to install):

* keyboard: GLFW key codes from the MuJoCo viewer's ``key_callback``. MuJoCo's viewer
  calls it on key *press* only: ``GlfwAdapter::IsKeyDownEvent`` is ``act == GLFW_PRESS``
  (mujoco simulate/glfw_adapter.cc; ``python/mujoco/simulate.cc`` forwards only those), so
  neither the release nor the OS key repeat reaches Python. A press therefore moves along
  its axis for ``keyboard.hold_time`` seconds (tap again to keep going; a repeat, should a
  future viewer deliver one, refreshes the hold), or, with ``keyboard.latch=true``, until
  the opposite key or the stop key.
* gamepad: the Linux joystick API (``/dev/input/js*``), read non-blocking.
* spacemouse: spacenavd's UNIX-socket protocol (default ``/var/run/spnav.sock``).

With the viewer open, the keyboard's keys work alongside a gamepad or SpaceMouse (episode
control from the keyboard, motion from both).
"""

from __future__ import annotations

import difflib
import math
import os
import select
import shutil
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from sim.record import TASK_TEXT, RecordTaskConfig

CONFIG_DIR = (Path(__file__).resolve().parent.parent / "configs").as_posix()

AXES = ("x", "y", "z", "roll", "pitch", "yaw")  # SpaceMouse order, as robot/takeover.py
CONTROL_REQUESTS = ("save", "save_success", "save_failure", "discard", "quit")
GRIPPER_ACTIONS = ("gripper_close", "gripper_open")
BUTTON_ACTIONS = (*GRIPPER_ACTIONS, *CONTROL_REQUESTS)
KEY_ACTIONS = (*(f"{a}_{s}" for a in AXES for s in ("pos", "neg")), *GRIPPER_ACTIONS, "stop",
               *CONTROL_REQUESTS)

# Default key layout. None of these keys is a shortcut of MuJoCo's viewer in passive mode
# (checked against simulate.cc: its shortcut switch and the UI sections' shortcut strings;
# see _viewer_shortcuts). The keypad mirrors the cursor block for keyboards that have one.
DEFAULT_KEYS: dict[str, list[str]] = {
    "x_pos": ["UP", "KP_8"], "x_neg": ["DOWN", "KP_2"],  # +x: away from the robot base
    "y_pos": ["LEFT", "KP_4"], "y_neg": ["RIGHT", "KP_6"],  # +y: to the robot's left
    "z_pos": ["HOME", "KP_9"], "z_neg": ["END", "KP_3"],  # +z: up
    "roll_pos": [], "roll_neg": [], "pitch_pos": [], "pitch_neg": [],  # the Panda tasks have no roll/pitch
    "yaw_pos": ["INSERT", "KP_7"], "yaw_neg": ["DELETE", "KP_1"],  # counter-clockwise seen from above
    "gripper_close": ["PAGE_DOWN", "KP_0"], "gripper_open": ["ENTER", "KP_DECIMAL"],
    "stop": ["KP_5"],
    "save": ["F8"], "save_success": ["F9"], "save_failure": ["F10"], "discard": ["F11"], "quit": ["F12"],
}
# Xbox-style pad under Linux's xpad driver: axes 0/1 left stick x/y, 3/4 right stick x/y
# (down and right positive), buttons 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 Back, 7 Start, 8 Guide.
DEFAULT_GAMEPAD_AXES: dict[str, int | None] = {"x": 1, "y": 0, "z": 4, "roll": None, "pitch": None, "yaw": 3}
DEFAULT_GAMEPAD_INVERT: list[str] = ["x", "y", "z", "yaw"]  # stick up = forward/up, stick left = +y/ccw
DEFAULT_GAMEPAD_BUTTONS: dict[str, int | None] = {
    "gripper_close": 5, "gripper_open": 4, "save": 7, "save_success": 3, "save_failure": 2, "discard": 6,
    "quit": 8}
# spacenavd axes are (x, y, z, rx, ry, rz); this is the ROS 2 spacenav driver's mapping to a
# robot twist (joystick_drivers spacenav.cpp: vx = z, vy = -x, vz = y, wx = rz, wy = -rx, wz = ry).
DEFAULT_SPACEMOUSE_AXES: dict[str, int | None] = {"x": 2, "y": 0, "z": 1, "roll": 5, "pitch": 3, "yaw": 4}
DEFAULT_SPACEMOUSE_INVERT: list[str] = ["y", "pitch"]
DEFAULT_SPACEMOUSE_BUTTONS: dict[str, int | None] = {"gripper_close": 0, "gripper_open": 1}


class TeleopConfigError(ValueError):
    """A bad teleop config value or device setting; the message names the key and what is allowed."""


# ---------------------------------------------------------------------------------------------
# commands and devices


@dataclass
class TeleopCommand:
    """What a person asked for in one control period.

    ``axes``: (6,) in [-1, 1], x y z roll pitch yaw (translation in the robot base frame).
    ``gripper``: -1 close / +1 open when requested this period, else None (keep the last).
    ``requests``: episode-control requests in the order they came (save, save_success,
    save_failure, discard, quit).
    """

    axes: np.ndarray = field(default_factory=lambda: np.zeros(6))
    gripper: float | None = None
    requests: tuple[str, ...] = ()


def _bounded(axes: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(np.asarray(axes, float), nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)


def _glfw_key_codes() -> dict[str, int]:
    """GLFW key names (``glfw.KEY_<NAME>`` without the prefix, e.g. UP, F8, KP_8, A) -> key code."""
    import glfw  # the pyGLFW package MuJoCo's viewer uses; importing it opens no window

    return {n[4:]: int(getattr(glfw, n)) for n in dir(glfw) if n.startswith("KEY_") and n != "KEY_UNKNOWN"
            and n != "KEY_LAST"}


def _viewer_shortcuts() -> dict[str, str]:
    """Keys MuJoCo's passive viewer (3.x simulate) acts on by itself, by GLFW key name -> what it does.

    From simulate.cc: the UI sections' shortcuts (Backspace: reset -- in passive mode it
    resets *our* MjData under the recorder; Tab, F1-F5 panels; 0-5 geom groups; the
    visualisation and rendering flag letters) and the shortcut switch ([ ] cameras, Esc
    free camera, Page Up select parent, F6/F7 frames/labels). Space, -, = and Left/Right
    act only in managed mode, but are listed for Space/-/= to be safe.
    """
    import mujoco

    out = {"BACKSPACE": "reset the simulation", "TAB": "toggle the UI panels", "ESCAPE": "free camera",
           "LEFT_BRACKET": "cycle cameras", "RIGHT_BRACKET": "cycle cameras", "PAGE_UP": "select parent body",
           "SPACE": "pause/run", "MINUS": "slow down", "EQUAL": "speed up"}
    out.update({f"F{i}": "viewer panel/option" for i in range(1, 8)})
    out.update({str(i): f"toggle geom group {i}" for i in range(6)})
    names = {",": "COMMA", "'": "APOSTROPHE", "/": "SLASH", ";": "SEMICOLON", "`": "GRAVE_ACCENT",
             "\\": "BACKSLASH"}
    for label, _, key in (*mujoco.mjVISSTRING, *mujoco.mjRNDSTRING):
        if key:
            out.setdefault(names.get(key, key.upper()), f"toggle '{label}'")
    return out


class KeyboardDevice:
    """Keys from MuJoCo's viewer: ``key_callback`` is what ``mujoco.viewer.launch_passive``
    calls (from its UI thread) with each pressed key's GLFW code; :meth:`poll` turns the
    presses since the last control step into a command.

    Only presses arrive (no releases, no OS key repeat; see the module docstring; under
    Xvfb with mujoco 3.3.0 a key held down for 1.5 s gave exactly one call), so an
    axis key moves for ``hold_time`` seconds after its press, measured on the ``now``
    passed to :meth:`poll` (the teleop loop's control clock), or until the opposite key or
    ``stop`` with ``latch=True``. Pressing the opposite direction replaces the current one.
    Headless tests call ``key_callback`` themselves: a stand-in for the physical keyboard at
    the same boundary the viewer uses.
    """

    name = "keyboard"

    def __init__(self, keys: Mapping[str, Sequence[str]] | None = None, hold_time: float = 0.3,
                 latch: bool = False, forbid_viewer_keys: bool = True,
                 where: str = "keyboard") -> None:
        if not hold_time > 0:
            raise TeleopConfigError(f"{where}.hold_time={hold_time}: must be > 0 (seconds a key press moves)")
        self.hold_time, self.latch = float(hold_time), bool(latch)
        keys = DEFAULT_KEYS if keys is None else keys
        self.code_to_action = self._parse(keys, forbid_viewer_keys, where)
        self.keys = {k: [str(n).upper() for n in v or []] for k, v in keys.items()}
        self._pressed: deque[int] = deque()  # filled by the viewer thread, drained by poll (deque ops are atomic)
        self._direction = np.zeros(6)
        self._until = np.full(6, -np.inf)

    @staticmethod
    def _parse(keys: Mapping[str, Sequence[str]], forbid_viewer_keys: bool, where: str) -> dict[int, str]:
        codes = _glfw_key_codes()
        reserved = _viewer_shortcuts() if forbid_viewer_keys else {}
        out: dict[int, str] = {}
        owner: dict[int, str] = {}
        for action, names in keys.items():
            if action not in KEY_ACTIONS:
                hint = difflib.get_close_matches(str(action), KEY_ACTIONS, n=1)
                raise TeleopConfigError(f"{where}.keys.{action}: unknown action"
                                        f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; allowed: "
                                        f"{', '.join(KEY_ACTIONS)}")
            if isinstance(names, str):
                raise TeleopConfigError(f"{where}.keys.{action}={names!r}: must be a list of key names, "
                                        f"e.g. [{names}]")
            for raw in names or []:
                name = str(raw).upper()
                if name not in codes:
                    hint = difflib.get_close_matches(name, codes, n=3)
                    raise TeleopConfigError(f"{where}.keys.{action}: unknown key name {raw!r}"
                                            f"{f' (close: {hint})' if hint else ''}; key names are GLFW's "
                                            f"(UP, DOWN, HOME, PAGE_DOWN, F8, KP_8, A, 7, ...)")
                if name in reserved:
                    raise TeleopConfigError(f"{where}.keys.{action}: {name} is a MuJoCo viewer shortcut "
                                            f"({reserved[name]}); pick another key")
                code = codes[name]
                if code in owner and owner[code] != action:
                    raise TeleopConfigError(f"{where}.keys.{action}: {name} is already bound to {owner[code]}")
                owner[code] = action
                out[code] = action
        return out

    def key_callback(self, keycode: int) -> None:
        """The viewer's ``key_callback``: record one key press (any thread)."""
        self._pressed.append(int(keycode))

    def poll(self, now: float) -> TeleopCommand:
        gripper, requests = None, []
        while self._pressed:
            action = self.code_to_action.get(self._pressed.popleft())
            if action is None:
                continue
            if action == "stop":
                self._until[:] = -np.inf
            elif action in GRIPPER_ACTIONS:
                gripper = -1.0 if action == "gripper_close" else 1.0
            elif action in CONTROL_REQUESTS:
                requests.append(action)
            else:
                axis, sign = action.rsplit("_", 1)
                i = AXES.index(axis)
                self._direction[i] = 1.0 if sign == "pos" else -1.0
                self._until[i] = math.inf if self.latch else now + self.hold_time
        live = now + 1e-6 < self._until  # 1e-6 s: a press at t moves for the steps with t <= now < t + hold
        return TeleopCommand(np.where(live, self._direction, 0.0), gripper, tuple(requests))

    def flush(self) -> None:
        """Forget presses not yet read (made before the session started)."""
        self._pressed.clear()

    def describe(self) -> list[str]:
        what = {"x_pos": "+x (away from the base)", "x_neg": "-x (toward the base)", "y_pos": "+y (robot's left)",
                "y_neg": "-y (robot's right)", "z_pos": "+z (up)", "z_neg": "-z (down)",
                "yaw_pos": "yaw + (ccw from above)", "yaw_neg": "yaw - (cw)", "stop": "stop all motion",
                "save": "save (label: env success)", "save_success": "save as success",
                "save_failure": "save as failure", "discard": "discard episode", "quit": "quit"}
        hold = "until the opposite key or stop" if self.latch else f"{self.hold_time:g} s per press (tap again)"
        lines = [f"keyboard (viewer window focused); a motion key moves {hold}:"]
        for action, names in self.keys.items():
            if names:
                lines.append(f"  {what.get(action, action.replace('_', ' ')):28s} {', '.join(names)}")
        return lines

    def close(self) -> None:
        pass


def _axis_map(axes: Mapping[str, int | None], invert: Iterable[str], n_source: int | None,
              where: str) -> list[tuple[int, int, float]]:
    """Validate ``{axis name: source index or None}`` + inverted names -> [(out, source, sign)]."""
    out = []
    invert = list(invert or [])
    for name in [*axes, *invert]:
        if name not in AXES:
            key = f"{where}.axes.{name}" if name in axes else f"{where}.invert"
            raise TeleopConfigError(f"{key}: unknown axis {name!r}; allowed: {', '.join(AXES)}")
    for name, src in axes.items():
        if src is None:
            continue
        if not isinstance(src, int) or src < 0 or (n_source is not None and src >= n_source):
            limit = f"0..{n_source - 1}" if n_source is not None else ">= 0"
            raise TeleopConfigError(f"{where}.axes.{name}={src!r}: must be a device axis index {limit} or null")
        out.append((AXES.index(name), src, -1.0 if name in invert else 1.0))
    return out


def _button_map(buttons: Mapping[str, int | None], where: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for action, b in buttons.items():
        if action not in BUTTON_ACTIONS:
            raise TeleopConfigError(f"{where}.buttons.{action}: unknown action; allowed: {', '.join(BUTTON_ACTIONS)}")
        if b is None:
            continue
        if not isinstance(b, int) or b < 0:
            raise TeleopConfigError(f"{where}.buttons.{action}={b!r}: must be a button number >= 0 or null")
        if b in out:
            raise TeleopConfigError(f"{where}.buttons.{action}: button {b} is already bound to {out[b]}")
        out[b] = action
    return out


class _ButtonAxisDevice:
    """Shared by gamepad and SpaceMouse: raw axes/buttons -> command (mapping, deadband, edges)."""

    name = "device"

    def __init__(self, axes, invert, buttons, deadband: float, n_axes: int | None, where: str) -> None:
        if not 0 <= deadband < 1:
            raise TeleopConfigError(f"{where}.deadband={deadband}: must be in [0, 1) (normalised axis units)")
        self.where = where
        self.deadband = float(deadband)
        self.axis_map = _axis_map(axes, invert, n_axes, where)
        self.button_map = _button_map(buttons, where)
        self.raw_axes: dict[int, float] = {}  # source index -> normalised value
        self.buttons: dict[int, bool] = {}
        self._requests: list[str] = []
        self.connected = True

    def _button(self, number: int, pressed: bool, initial: bool = False) -> None:
        was = self.buttons.get(number, False)
        self.buttons[number] = pressed
        action = self.button_map.get(number)
        # Episode control fires on the press edge only, never for a state reported at open
        # (a button held while the device was opened must not save or quit).
        if pressed and not was and not initial and action in CONTROL_REQUESTS:
            self._requests.append(action)

    def _command(self) -> TeleopCommand:
        axes = np.zeros(6)
        if self.connected:
            for out, src, sign in self.axis_map:
                axes[out] = sign * self.raw_axes.get(src, 0.0)
        axes = np.where(np.abs(axes) > self.deadband, axes, 0.0)  # deadband as robot/takeover.py
        held = {a for b, a in self.button_map.items() if self.buttons.get(b)}
        gripper = -1.0 if "gripper_close" in held else (1.0 if "gripper_open" in held else None)  # both: close
        requests, self._requests = tuple(self._requests), []
        return TeleopCommand(_bounded(axes), gripper, requests)

    def flush(self) -> None:
        """Read pending events for their state, dropping episode-control requests."""
        self.poll(0.0)

    def _describe_maps(self) -> list[str]:
        lines = ["  axes: " + ", ".join(f"{AXES[o]} <- {'-' if s < 0 else ''}axis {src}" for o, src, s in self.axis_map)]
        lines.append("  buttons: " + ", ".join(f"{a} = {b}" for b, a in sorted(self.button_map.items())))
        return lines


# Linux joystick API (linux/joystick.h, Documentation/input/joydev/joystick-api.rst):
# struct js_event { __u32 time; __s16 value; __u8 type; __u8 number; }, native byte order.
JS_EVENT = struct.Struct("=IhBB")
JS_EVENT_BUTTON, JS_EVENT_AXIS, JS_EVENT_INIT = 0x01, 0x02, 0x80
JS_AXIS_MAX = 32767.0


class GamepadDevice(_ButtonAxisDevice):
    """A gamepad through the Linux joystick API: 8-byte ``js_event`` records read
    non-blocking from ``/dev/input/jsN``. On open the kernel first reports every axis and
    button state with the ``JS_EVENT_INIT`` flag; those set the state but fire no
    episode-control request. Axes are value / 32767, then the deadband zeroes small values.
    Gripper buttons act while held; control buttons on the press edge.

    Tests feed packed events through a FIFO at ``path``: a stand-in at the device-file
    boundary (the kernel's joydev), read by the same code.
    """

    name = "gamepad"

    def __init__(self, path: str = "/dev/input/js0", axes: Mapping[str, int | None] | None = None,
                 invert: Sequence[str] | None = None, buttons: Mapping[str, int | None] | None = None,
                 deadband: float = 0.1, where: str = "gamepad") -> None:
        super().__init__(DEFAULT_GAMEPAD_AXES if axes is None else axes,
                         DEFAULT_GAMEPAD_INVERT if invert is None else invert,
                         DEFAULT_GAMEPAD_BUTTONS if buttons is None else buttons, deadband, None, where)
        self.path = str(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            found = sorted(str(p) for p in Path("/dev/input").glob("js*")) if Path("/dev/input").is_dir() else []
            raise TeleopConfigError(f"{where}.path={self.path}: no such device (joysticks here: {found or 'none'}); "
                                    f"plug in the gamepad or set {where}.path=/dev/input/jsN") from None
        except PermissionError:
            raise TeleopConfigError(f"{where}.path={self.path}: permission denied (add yourself to the 'input' "
                                    f"group, or set {where}.path)") from None
        self._buf = b""

    def _read(self) -> bytes:
        chunks = []
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            except OSError as err:  # unplugged: ENODEV
                if self.connected:
                    print(f"teleop: {self.path}: {err}; the gamepad's axes read 0 from now on", file=sys.stderr)
                self.connected = False
                break
            if not data:  # a FIFO with no writer at the moment
                break
            chunks.append(data)
        return b"".join(chunks)

    def poll(self, now: float) -> TeleopCommand:
        self._buf += self._read()
        n = len(self._buf) // JS_EVENT.size * JS_EVENT.size
        for _, value, etype, number in JS_EVENT.iter_unpack(self._buf[:n]):
            initial = bool(etype & JS_EVENT_INIT)
            kind = etype & ~JS_EVENT_INIT
            if kind == JS_EVENT_AXIS:
                self.raw_axes[number] = max(-1.0, min(1.0, value / JS_AXIS_MAX))
            elif kind == JS_EVENT_BUTTON:
                self._button(number, value != 0, initial)
        self._buf = self._buf[n:]  # keep a partial record for the next read
        return self._command()

    def describe(self) -> list[str]:
        return [f"gamepad {self.path} (deadband {self.deadband:g}):", *self._describe_maps()]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# spacenavd's client protocol v0 over its UNIX socket: the daemon writes each event as
# `int data[8]` in native byte order (spacenavd src/proto_unix.c, send_uevent; enum in
# src/proto.h): data[0] = 0 motion (data[1..6] = x y z rx ry rz, scaled by the client
# sensitivity, data[7] = period in ms), 1 button press / 2 release (data[1] = button
# number). Device/config events (3, 4) come only to protocol-v1 clients that ask for them;
# we never switch protocol, and skip any other type. Default socket: /var/run/spnav.sock
# (spacenavd src/spnavd.h SOCK_NAME).
SPNAV_EVENT = struct.Struct("=8i")
SPNAV_MOTION, SPNAV_PRESS, SPNAV_RELEASE = 0, 1, 2


class SpaceMouseDevice(_ButtonAxisDevice):
    """A 3Dconnexion SpaceMouse through spacenavd: connect to its UNIX socket and read
    32-byte events non-blocking. A motion event replaces all six axes (raw / ``full_scale``,
    clipped); the device sends zeros when let go, and the values hold until the next event.
    If the daemon goes away the axes read 0.

    Tests run a UNIX-socket server on a temporary path that sends packed events: a
    stand-in for spacenavd at the socket boundary, read by the same code.
    """

    name = "spacemouse"

    def __init__(self, path: str = "/var/run/spnav.sock", axes: Mapping[str, int | None] | None = None,
                 invert: Sequence[str] | None = None, buttons: Mapping[str, int | None] | None = None,
                 deadband: float = 0.05, full_scale: float = 350.0, where: str = "spacemouse") -> None:
        super().__init__(DEFAULT_SPACEMOUSE_AXES if axes is None else axes,
                         DEFAULT_SPACEMOUSE_INVERT if invert is None else invert,
                         DEFAULT_SPACEMOUSE_BUTTONS if buttons is None else buttons, deadband, 6, where)
        if not full_scale > 0:
            raise TeleopConfigError(f"{where}.full_scale={full_scale}: must be > 0 (raw value of a full deflection)")
        self.path, self.full_scale = str(path), float(full_scale)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            self.sock.close()
            raise TeleopConfigError(f"{where}.path={self.path}: cannot connect to spacenavd ({err.strerror}); "
                                    f"start spacenavd or set {where}.path to its socket") from None
        self.sock.setblocking(False)
        self._buf = b""

    def _read(self) -> bytes:
        chunks = []
        while self.connected:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                print(f"teleop: spacenavd closed {self.path}; the SpaceMouse axes read 0 from now on", file=sys.stderr)
                self.connected = False
                break
            chunks.append(data)
        return b"".join(chunks)

    def poll(self, now: float) -> TeleopCommand:
        self._buf += self._read()
        n = len(self._buf) // SPNAV_EVENT.size * SPNAV_EVENT.size
        for ev in SPNAV_EVENT.iter_unpack(self._buf[:n]):
            if ev[0] == SPNAV_MOTION:
                for i in range(6):
                    self.raw_axes[i] = max(-1.0, min(1.0, ev[1 + i] / self.full_scale))
            elif ev[0] in (SPNAV_PRESS, SPNAV_RELEASE):
                self._button(ev[1], ev[0] == SPNAV_PRESS)
        self._buf = self._buf[n:]
        return self._command()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for data (tests); True if some is ready."""
        return bool(select.select([self.sock], [], [], timeout)[0])

    def describe(self) -> list[str]:
        return [f"spacemouse {self.path} (full scale {self.full_scale:g}, deadband {self.deadband:g}):",
                *self._describe_maps()]

    def close(self) -> None:
        self.sock.close()


class MergedDevice:
    """Several devices at once (a gamepad plus the viewer's keyboard): axes add up (clipped),
    the last gripper request wins, requests are concatenated."""

    def __init__(self, devices: Sequence[Any]) -> None:
        self.devices = list(devices)
        self.name = "+".join(d.name for d in self.devices)

    def poll(self, now: float) -> TeleopCommand:
        cmds = [d.poll(now) for d in self.devices]
        grip = [c.gripper for c in cmds if c.gripper is not None]
        return TeleopCommand(_bounded(sum(c.axes for c in cmds)), grip[-1] if grip else None,
                             tuple(r for c in cmds for r in c.requests))

    def flush(self) -> None:
        for d in self.devices:
            d.flush()

    @property
    def keyboard(self) -> KeyboardDevice | None:
        return next((d for d in self.devices if isinstance(d, KeyboardDevice)), None)

    def describe(self) -> list[str]:
        return [line for d in self.devices for line in d.describe()]

    def close(self) -> None:
        for d in self.devices:
            d.close()


class ActionMapper:
    """Command -> Panda action ``(dx, dy, dz[, dyaw], gripper)`` in [-1, 1] (sim/panda/base.py).

    ``dx, dy, dz = speed * (x, y, z)``: one unit moves the fingertip target by the env's
    ``action_scale`` (0.05 m per 10 Hz step, 0.5 m/s), so ``speed`` is the fraction of that
    top speed a full deflection gives. ``dyaw = yaw_speed * yaw``. Roll and pitch have no
    action entry and are ignored. The gripper entry keeps the last request (-1 closed, +1
    open), starting open: a close request latches until an open request.
    """

    def __init__(self, layout: Sequence[str], speed: float = 0.5, yaw_speed: float = 0.5) -> None:
        allowed = {"dx", "dy", "dz", "dyaw", "gripper"}
        if not set(layout) <= allowed or layout[-1] != "gripper":
            raise TeleopConfigError(f"task: teleop drives the Panda action layout (dx, dy, dz[, dyaw], gripper); "
                                    f"this env's action is {tuple(layout)}")
        for key, v in (("speed", speed), ("yaw_speed", yaw_speed)):
            if not 0 < v <= 1:
                raise TeleopConfigError(f"{key}={v}: must be in (0, 1] (fraction of the env's top speed)")
        self.layout, self.speed, self.yaw_speed = tuple(layout), float(speed), float(yaw_speed)
        self.source = {"dx": (0, self.speed), "dy": (1, self.speed), "dz": (2, self.speed),
                       "dyaw": (5, self.yaw_speed)}
        self.gripper = 1.0

    def reset(self) -> None:
        self.gripper = 1.0

    def __call__(self, cmd: TeleopCommand) -> np.ndarray:
        if cmd.gripper is not None:
            self.gripper = float(np.clip(cmd.gripper, -1.0, 1.0))
        axes = _bounded(cmd.axes)
        a = [self.gripper if k == "gripper" else axes[self.source[k][0]] * self.source[k][1] for k in self.layout]
        return np.clip(np.asarray(a, np.float32), -1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# config


@dataclass
class KeyboardConfig:
    keys: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_KEYS.items()})
    hold_time: float = 0.3
    latch: bool = False


@dataclass
class GamepadConfig:
    path: str = "/dev/input/js0"
    axes: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_GAMEPAD_AXES))
    invert: list[str] = field(default_factory=lambda: list(DEFAULT_GAMEPAD_INVERT))
    buttons: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_GAMEPAD_BUTTONS))
    deadband: float = 0.1


@dataclass
class SpaceMouseConfig:
    path: str = "/var/run/spnav.sock"
    axes: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_SPACEMOUSE_AXES))
    invert: list[str] = field(default_factory=lambda: list(DEFAULT_SPACEMOUSE_INVERT))
    buttons: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_SPACEMOUSE_BUTTONS))
    deadband: float = 0.05
    full_scale: float = 350.0


@dataclass
class TeleopConfig:
    """Schema of configs/teleop.yaml (comments there)."""

    task: RecordTaskConfig = MISSING
    device: str = "keyboard"
    keyboard: KeyboardConfig = field(default_factory=KeyboardConfig)
    gamepad: GamepadConfig = field(default_factory=GamepadConfig)
    spacemouse: SpaceMouseConfig = field(default_factory=SpaceMouseConfig)
    speed: float = 0.5
    yaw_speed: float = 0.5
    viewer: bool = True
    realtime: bool | None = None
    episodes: int = 10
    seed: int = 0
    max_episode_steps: int | None = 600
    auto_end_on_success: bool = True
    success_hold: float = 1.0
    save_on_time_limit: bool = True
    out: str | None = None
    overwrite: bool = False
    task_text: str | None = None
    operator: str | None = None
    cameras: list[str] | None = None
    image_size: int | None = None
    crf: int = 18


DEVICES = ("keyboard", "gamepad", "spacemouse")
_GROUPS = ("task",)
_OPEN_DICTS = ("task.kwargs", "keyboard.keys", "gamepad.axes", "gamepad.buttons", "spacemouse.axes",
               "spacemouse.buttons")


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="teleop_schema", node=TeleopConfig)


def check_overrides(overrides: Sequence[str]) -> None:
    """Unknown ``key=value`` overrides fail with the nearest valid key (before Hydra's traceback)."""
    from common.cli import check_overrides as check

    allowed = {"keyboard.keys": KEY_ACTIONS, "gamepad.axes": AXES, "gamepad.buttons": BUTTON_ACTIONS,
               "spacemouse.axes": AXES, "spacemouse.buttons": BUTTON_ACTIONS}
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~")
        parent, _, name = key.rpartition(".")
        if parent in allowed and name not in allowed[parent]:
            raise TeleopConfigError(f"{key}: unknown {'axis' if parent.endswith('axes') else 'action'} {name!r}; "
                                    f"allowed: {', '.join(allowed[parent])}")
    schema = OmegaConf.structured(TeleopConfig)
    schema.task = RecordTaskConfig
    check(overrides, schema, _GROUPS, _OPEN_DICTS, TeleopConfigError)


def compose(overrides: Sequence[str] = ()) -> tuple[DictConfig, str]:
    """Build the teleop config from ``key=value`` overrides; returns (config, task choice)."""
    from common.cli import compose_task_command

    _register()
    check_overrides(overrides)
    cfg, choice = compose_task_command(CONFIG_DIR, "teleop", overrides, list(TeleopConfig.__dataclass_fields__),
                                       TeleopConfigError)
    validate(cfg)
    return cfg, choice


def validate(cfg: DictConfig) -> None:
    if cfg.device not in DEVICES:
        raise TeleopConfigError(f"device={cfg.device}: allowed: {', '.join(DEVICES)}")
    if cfg.episodes < 1:
        raise TeleopConfigError(f"episodes={cfg.episodes}: must be an integer >= 1 (episodes to save)")
    for key in ("speed", "yaw_speed"):
        if not 0 < cfg[key] <= 1:
            raise TeleopConfigError(f"{key}={cfg[key]}: must be in (0, 1] (fraction of the env's top speed)")
    if not cfg.success_hold >= 0:
        raise TeleopConfigError(f"success_hold={cfg.success_hold}: must be >= 0 seconds")
    if cfg.max_episode_steps is not None and cfg.max_episode_steps < 1:
        raise TeleopConfigError(f"max_episode_steps={cfg.max_episode_steps}: must be >= 1 or null (the task's limit)")
    if cfg.image_size is not None and (cfg.image_size < 2 or cfg.image_size % 2):
        raise TeleopConfigError(f"image_size={cfg.image_size}: must be an even number >= 2 (H.264 yuv420p video)")
    if not 0 <= cfg.crf <= 51:
        raise TeleopConfigError(f"crf={cfg.crf}: must be in 0..51")
    if not cfg.keyboard.hold_time > 0:
        raise TeleopConfigError(f"keyboard.hold_time={cfg.keyboard.hold_time}: must be > 0 seconds")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def make_keyboard(cfg: DictConfig) -> KeyboardDevice:
    k = cfg.keyboard
    return KeyboardDevice(_plain(k["keys"]), float(k.hold_time), bool(k.latch), forbid_viewer_keys=True)


def make_device(cfg: DictConfig) -> Any:
    """The configured input device; with the viewer on, a gamepad/SpaceMouse is merged with
    the viewer's keyboard (episode control keys)."""
    if cfg.device == "keyboard":
        return make_keyboard(cfg)
    if cfg.device == "gamepad":
        g = cfg.gamepad
        dev = GamepadDevice(g.path, _plain(g.axes), _plain(g.invert), _plain(g.buttons), float(g.deadband))
    elif cfg.device == "spacemouse":
        s = cfg.spacemouse
        dev = SpaceMouseDevice(s.path, _plain(s.axes), _plain(s.invert), _plain(s.buttons), float(s.deadband),
                               float(s.full_scale))
    else:
        raise TeleopConfigError(f"device={cfg.device}: allowed: {', '.join(DEVICES)}")
    if cfg.viewer:
        try:
            return MergedDevice([dev, make_keyboard(cfg)])
        except BaseException:
            dev.close()
            raise
    return dev


# ---------------------------------------------------------------------------------------------
# the session


class Tick(NamedTuple):
    """Where the loop is when ``on_tick`` is called: global tick, episode number (begun,
    from 0, discarded ones included), frames recorded in it so far."""

    tick: int
    episode: int
    frame: int


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _make_env(cfg: DictConfig, task_choice: str):
    import sim

    kwargs = dict(OmegaConf.to_container(cfg.task.kwargs, resolve=True) or {})
    if cfg.cameras is not None:
        kwargs["cameras"] = list(cfg.cameras)
    if cfg.image_size is not None:
        kwargs["image_size"] = int(cfg.image_size)
    if kwargs.get("cameras") or cfg.viewer:
        from sim.gl import before_gl_context

        before_gl_context()
    steps = cfg.max_episode_steps if cfg.max_episode_steps is not None else cfg.task.max_episode_steps
    make_kw = {} if steps is None else {"max_episode_steps": int(steps)}
    env = sim.make(cfg.task.env_id, **kwargs, **make_kw)
    if getattr(env.unwrapped, "task_name", None) not in TASK_TEXT:
        env.close()
        raise TeleopConfigError(f"task={task_choice}: teleop drives the Panda tasks ({', '.join(sorted(TASK_TEXT))})")
    return env, kwargs


def run_teleop(cfg: DictConfig, task_choice: str = "task", *, device: Any = None,
               on_tick: Callable[[Tick], None] | None = None) -> dict[str, Any]:
    """Run a teleop session: episodes until ``cfg.episodes`` are saved or the person quits.

    ``device``: an input device (default: :func:`make_device`); ``on_tick(Tick)`` is called
    at the start of every control step, before the device is read (tests feed key presses
    there). Returns the dataset summary plus ``saved``, ``discarded``, ``labels`` (per saved
    episode, this session) and ``recorded_frames``.
    """
    from common.episodes import Dataset, DatasetWriter

    if cfg.viewer and not _has_display():
        raise TeleopConfigError("viewer=true needs a display (DISPLAY/WAYLAND_DISPLAY is unset); "
                                "use viewer=false to run headless")
    own_device = device is None
    if own_device:
        device = make_device(cfg)
    env = viewer = None
    try:
        env, kwargs = _make_env(cfg, task_choice)
        unwrapped = env.unwrapped
        spec = unwrapped.embodiment
        mapper = ActionMapper(spec.action.layout, float(cfg.speed), float(cfg.yaw_speed))
        hz = float(spec.control_hz)
        hold_steps = max(1, math.ceil(float(cfg.success_hold) * hz - 1e-9))
        realtime = cfg.viewer if cfg.realtime is None else bool(cfg.realtime)
        text = cfg.task_text or TASK_TEXT[unwrapped.task_name]
        out = Path(cfg.out or os.path.join("data", f"teleop_{task_choice}"))
        if cfg.overwrite and out.exists():
            shutil.rmtree(out)

        print(f"teleop {task_choice}: {env.spec.max_episode_steps} steps max per episode at {hz:g} Hz, "
              f"speed {cfg.speed:g}; recording to {out}")
        for line in device.describe():
            print(line)
        if cfg.viewer:
            viewer = _launch_viewer(unwrapped, device)
            # The window takes a moment to appear (seconds with software GL); presses made
            # before the loop runs would all land in its first control step: drop them.
            device.flush()

        labels: list[bool] = []
        discarded, frames_total, tick, episode = 0, 0, 0, 0
        quit_ = False
        pacer = _Pacer(hz)
        with DatasetWriter(out, spec, cameras=kwargs.get("cameras") or [], crf=int(cfg.crf)) as writer:
            while len(labels) < int(cfg.episodes) and not quit_:
                seed = int(cfg.seed) + episode
                obs, info = env.reset(seed=seed)
                mapper.reset()
                writer.begin_episode(text, source="teleop", metadata={
                    "seed": seed, "env_id": cfg.task.env_id, "device": device.name, "speed": float(cfg.speed),
                    "operator": cfg.operator})
                pacer.restart()
                pending: dict[str, Any] | None = None  # the last step, written once we know if it ends the episode
                frames, success_run = 0, 0
                end: tuple[str, bool | None] | None = None  # (why, label) ; label None = discard
                while end is None:
                    if on_tick is not None:
                        on_tick(Tick(tick, episode, frames))
                    if viewer is not None and not viewer.is_running():
                        requests = ("quit",)
                        cmd = TeleopCommand()
                    else:
                        cmd = device.poll(tick / hz)
                        requests = cmd.requests
                    tick += 1
                    if requests:
                        # The first ending request decides the episode; a quit in the same
                        # period still quits afterwards (save + quit saves, then quits).
                        quit_ = "quit" in requests
                        req = next((r for r in requests if r != "quit"), "quit")
                        if req.startswith("save") and pending is None and not quit_:
                            print(f"episode {episode}: nothing recorded yet; {req} ignored")
                        else:
                            last_success = bool(pending["success"]) if pending else bool(info["success"])
                            end = {"quit": ("quit", None), "discard": ("discard", None),
                                   "save": ("save", last_success), "save_success": ("save as success", True),
                                   "save_failure": ("save as failure", False)}[req]
                            break
                    action = mapper(cmd)
                    next_obs, reward, terminated, truncated, info = env.step(action)
                    if pending is not None:
                        writer.add_frame(**pending)
                    pending = {"obs": obs, "action": action, "reward": float(reward),
                               "success": bool(info["success"]), "done": bool(terminated or truncated),
                               "truncated": bool(truncated and not terminated)}
                    obs, frames = next_obs, frames + 1
                    success_run = success_run + 1 if info["success"] else 0
                    if terminated:
                        end = ("terminated", bool(info["success"]))
                    elif cfg.auto_end_on_success and success_run >= hold_steps:
                        end = ("success", True)
                    elif truncated:
                        end = ("time limit", bool(info["success"]) if cfg.save_on_time_limit else None)
                    if viewer is not None:
                        viewer.sync()
                    if realtime:
                        pacer.wait()
                why, label = end
                if label is None or pending is None:
                    writer.discard_episode()
                    if pending is not None:
                        discarded += 1
                        print(f"episode {episode}: discarded ({why}, {frames} frames)")
                else:
                    # A person's or the success rule's end is the episode's end; a failure
                    # ended by a person is a cut-off (truncated), not a terminal state.
                    pending["done"] = True
                    pending["truncated"] = pending["truncated"] or (not label and why != "terminated")
                    writer.add_frame(**pending)
                    index = writer.end_episode(success=label, final_obs=obs)
                    labels.append(label)
                    frames_total += frames
                    print(f"episode {episode}: saved as #{index} ({'success' if label else 'failure'}, {why}, "
                          f"{frames} frames) [{len(labels)}/{cfg.episodes}]")
                episode += 1
    finally:
        if viewer is not None:
            viewer.close()
        if env is not None:
            env.close()
        if own_device:
            device.close()
    summary = Dataset(out).summary()
    summary.update({"saved": len(labels), "discarded": discarded, "labels": labels, "recorded_frames": frames_total})
    return summary


class _Pacer:
    """Sleep to hold a control rate; a late step (saving an episode, a slow frame) resets the
    schedule instead of being caught up with a burst of fast steps."""

    def __init__(self, hz: float) -> None:
        self.period = 1.0 / hz
        self.next = time.perf_counter()

    def restart(self) -> None:
        self.next = time.perf_counter()

    def wait(self) -> None:
        self.next += self.period
        delay = self.next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            self.next = time.perf_counter()


def _launch_viewer(unwrapped: Any, device: Any) -> Any:
    """MuJoCo's passive viewer on the env's model/data; its key presses go to the keyboard device."""
    import mujoco.viewer

    keyboard = device if isinstance(device, KeyboardDevice) else getattr(device, "keyboard", None)
    callback = keyboard.key_callback if keyboard is not None else None
    return mujoco.viewer.launch_passive(unwrapped.model, unwrapped.data, key_callback=callback)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``rewardforge-teleop key=value ...``."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    from common.episodes import DatasetError

    try:
        cfg, choice = compose(args)
        if cfg.device == "keyboard" and not cfg.viewer:
            raise TeleopConfigError("device=keyboard needs viewer=true: the keys come from the viewer window "
                                    "(headless teleop: device=gamepad or device=spacemouse)")
        summary = run_teleop(cfg, choice)
    except TeleopConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
    except DatasetError as err:
        print(f"dataset error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted: the episode in progress was dropped; saved episodes are kept", file=sys.stderr)
        sys.exit(130)
    from common.episodes.check import format_summary

    print(format_summary(summary))


if __name__ == "__main__":
    main()
