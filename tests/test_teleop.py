"""rewardforge-teleop: input devices -> commands -> Panda actions -> recorded episodes.

The physical devices are replaced at their boundary only: key codes go into the same
``key_callback`` MuJoCo's viewer calls, packed ``js_event`` records through a FIFO stand
in for /dev/input/js*, and a UNIX-socket server stands in for spacenavd.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import tempfile
import threading
import time

import numpy as np
import pytest

import sim
from common.episodes import Dataset, check_dataset
from sim import teleop as T

KEY = T._glfw_key_codes()
HZ = 10.0


@pytest.fixture(scope="module")
def reach_env():
    env = sim.make("rewardforge/PandaReach-v0", max_episode_steps=1000)
    yield env
    env.close()


def test_keyboard_moves_the_end_effector_and_closes_the_gripper(reach_env):
    env = reach_env
    obs, _ = env.reset(seed=1)
    kb = T.KeyboardDevice(hold_time=0.3)
    mapper = T.ActionMapper(env.unwrapped.embodiment.action.layout, speed=0.5)
    tick = 0

    def run(n):
        nonlocal tick, obs
        actions = []
        for _ in range(n):
            actions.append(mapper(kb.poll(tick / HZ)))
            tick += 1
            obs = env.step(actions[-1])[0]
        return np.array(actions)

    start = obs["ee_pos"].copy()
    kb.key_callback(KEY["UP"])  # +x for hold_time = 3 control steps
    acts = run(3)
    np.testing.assert_array_equal(acts, [[0.5, 0, 0, 1]] * 3)
    acts = run(6)  # the hold has expired: no motion commanded, the arm settles
    np.testing.assert_array_equal(acts, [[0, 0, 0, 1]] * 6)
    moved = obs["ee_pos"].copy()
    assert moved[0] - start[0] > 0.05 and abs(moved[1] - start[1]) < 0.01 and abs(moved[2] - start[2]) < 0.01
    run(3)
    assert np.linalg.norm(obs["ee_pos"] - moved) < 0.005  # and stays put

    kb.key_callback(KEY["KP_2"])  # -x from the keypad
    run(9)
    assert obs["ee_pos"][0] < moved[0] - 0.05

    kb.key_callback(KEY["HOME"])
    kb.key_callback(KEY["LEFT"])  # two axes at once: +z and +y
    before = obs["ee_pos"].copy()
    run(9)
    assert obs["ee_pos"][2] - before[2] > 0.05 and obs["ee_pos"][1] - before[1] > 0.05

    assert obs["gripper"][0] > 0.9
    kb.key_callback(KEY["PAGE_DOWN"])
    acts = run(8)
    assert (acts[:, -1] == -1).all() and obs["gripper"][0] < 0.3  # closed, and it stays closed
    kb.key_callback(KEY["ENTER"])
    assert mapper(kb.poll(tick / HZ))[-1] == 1.0


def test_keyboard_hold_latch_stop_and_control_keys():
    kb = T.KeyboardDevice(hold_time=0.25)
    kb.key_callback(KEY["UP"])
    kb.key_callback(KEY["DOWN"])  # the later press wins
    assert kb.poll(1.0).axes[0] == -1.0 and kb.poll(1.2).axes[0] == -1.0 and kb.poll(1.3).axes[0] == 0.0
    kb.key_callback(KEY["A"] + 1000)  # an unbound code is ignored
    kb.key_callback(KEY["F9"])
    kb.key_callback(KEY["F12"])
    cmd = kb.poll(2.0)
    assert cmd.requests == ("save_success", "quit") and not cmd.axes.any() and cmd.gripper is None

    latched = T.KeyboardDevice(latch=True)
    latched.key_callback(KEY["END"])
    assert latched.poll(0.0).axes[2] == -1.0 and latched.poll(100.0).axes[2] == -1.0
    latched.key_callback(KEY["KP_5"])
    assert not latched.poll(100.1).axes.any()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"x_pos": ["NOT_A_KEY"]}, r"keyboard.keys.x_pos: unknown key name 'NOT_A_KEY'"),
        ({"fly": ["UP"]}, r"keyboard.keys.fly: unknown action"),
        ({"x_pos": ["BACKSPACE"]}, r"keyboard.keys.x_pos: BACKSPACE is a MuJoCo viewer shortcut \(reset"),
        ({"x_pos": ["S"]}, r"viewer shortcut \(toggle 'Shadow'\)"),
        ({"x_pos": ["UP"], "x_neg": ["UP"]}, r"keyboard.keys.x_neg: UP is already bound to x_pos"),
        ({"x_pos": "UP"}, r"must be a list of key names"),
    ],
)
def test_keyboard_mapping_errors_name_the_key(keys, message):
    with pytest.raises(T.TeleopConfigError, match=message):
        T.KeyboardDevice(keys)


def _js(value: int, kind: int, number: int, ms: int = 0) -> bytes:
    return T.JS_EVENT.pack(ms, value, kind, number)


def test_gamepad_decodes_js_events_from_a_fifo(tmp_path):
    path = tmp_path / "js0"
    os.mkfifo(path)
    pad = T.GamepadDevice(str(path), deadband=0.1)  # opens the read end non-blocking
    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        assert not pad.poll(0.0).axes.any()  # nothing written yet
        init = T.JS_EVENT_INIT
        # the kernel's state report on open: Start (save) held, left stick half up, right stick x in the deadband
        os.write(w, _js(1, T.JS_EVENT_BUTTON | init, 7) + _js(-16384, T.JS_EVENT_AXIS | init, 1)
                 + _js(1500, T.JS_EVENT_AXIS | init, 3))
        cmd = pad.poll(0.1)
        assert cmd.requests == ()  # a held button reported at open does not save
        np.testing.assert_allclose(cmd.axes, [16384 / 32767, 0, 0, 0, 0, 0])  # x = -axis 1; yaw in deadband
        # release then press Start: one save; a record split across reads waits for its rest
        data = _js(0, T.JS_EVENT_BUTTON, 7, 5) + _js(1, T.JS_EVENT_BUTTON, 7, 9) + _js(32767, T.JS_EVENT_AXIS, 0, 9)
        os.write(w, data[:20])
        cmd = pad.poll(0.2)
        assert cmd.requests == ("save",) and cmd.axes[1] == 0.0
        os.write(w, data[20:])
        cmd = pad.poll(0.3)
        assert cmd.requests == () and cmd.axes[1] == -1.0  # stick right = -y
        os.write(w, _js(1, T.JS_EVENT_BUTTON, 5) + _js(1, T.JS_EVENT_BUTTON, 6))
        cmd = pad.poll(0.4)
        assert cmd.gripper == -1.0 and cmd.requests == ("discard",)  # RB held closes; Back discards
        os.write(w, _js(0, T.JS_EVENT_BUTTON, 5) + _js(0, T.JS_EVENT_AXIS, 1) + _js(0, T.JS_EVENT_AXIS, 0))
        cmd = pad.poll(0.5)
        assert cmd.gripper is None and not cmd.axes.any()
    finally:
        os.close(w)
        pad.close()


def test_gamepad_config_errors_name_the_key(tmp_path):
    with pytest.raises(T.TeleopConfigError, match=r"gamepad.path=.*js9: no such device"):
        T.GamepadDevice(str(tmp_path / "js9"))
    with pytest.raises(T.TeleopConfigError, match=r"gamepad.buttons.jump: unknown action"):
        T.GamepadDevice(str(tmp_path / "js9"), buttons={"jump": 1})
    with pytest.raises(T.TeleopConfigError, match=r"gamepad.axes.up: unknown axis"):
        T.GamepadDevice(str(tmp_path / "js9"), axes={"up": 1})
    with pytest.raises(T.TeleopConfigError, match=r"gamepad.buttons.jump: unknown action"):
        T.compose(["+gamepad.buttons.jump=3"])
    cfg, _ = T.compose(["device=gamepad", "viewer=false", f"gamepad.path={tmp_path / 'js7'}"])
    with pytest.raises(T.TeleopConfigError, match=r"gamepad.path=.*js7"):
        T.make_device(cfg)


def _spnav(*ints: int) -> bytes:
    return struct.pack("=8i", *ints, *([0] * (8 - len(ints))))


def test_spacemouse_decodes_spacenavd_events_from_a_unix_socket():
    folder = tempfile.mkdtemp(prefix="spnav", dir="/tmp")  # AF_UNIX paths must stay short
    path = os.path.join(folder, "spnav.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(5.0)
    conns: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        conns.append(conn)
        motion = _spnav(T.SPNAV_MOTION, 175, 0, 350, 0, 0, -350, 16)  # half right, full forward, twist
        conn.sendall(motion[:20])  # an event split across two writes
        time.sleep(0.05)
        conn.sendall(motion[20:] + _spnav(T.SPNAV_PRESS, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    mouse = T.SpaceMouseDevice(path)
    try:
        deadline = time.monotonic() + 5.0
        cmd = mouse.poll(0.0)
        while cmd.gripper is None and time.monotonic() < deadline:
            mouse.wait(0.1)
            cmd = mouse.poll(0.0)
        # ROS spacenav mapping: x = z, y = -x, z = y, roll = rz, pitch = -rx, yaw = ry
        np.testing.assert_allclose(cmd.axes, [1.0, -0.5, 0, -1.0, 0, 0])
        assert cmd.gripper == -1.0
        thread.join(5.0)
        conns[0].sendall(_spnav(T.SPNAV_RELEASE, 0) + _spnav(T.SPNAV_MOTION, 5, 0, 10, 0, 0, 0, 16))
        while mouse.wait(0.5) and (cmd := mouse.poll(0.1)).gripper is not None:
            pass
        assert cmd.gripper is None and not cmd.axes.any()  # released; small motion inside the deadband
        conns[0].close()  # spacenavd goes away: motion stops
        mouse.wait(1.0)
        cmd = mouse.poll(0.2)
        assert not mouse.connected and not cmd.axes.any()
    finally:
        mouse.close()
        server.close()
        for c in conns:
            c.close()
        os.unlink(path)
        os.rmdir(folder)
    with pytest.raises(T.TeleopConfigError, match=r"spacemouse.path=.*cannot connect to spacenavd"):
        T.SpaceMouseDevice(path)


def test_headless_session_records_labelled_teleop_episodes(tmp_path):
    cfg, choice = T.compose(["task=panda_reach", "viewer=false", "episodes=3", "seed=5", "max_episode_steps=40",
                             "auto_end_on_success=false", f"out={tmp_path / 'demos'}", "operator=test"])
    kb = T.make_keyboard(cfg)
    script = {  # (episode, frame) -> keys pressed before that control step is read
        (0, 0): ["UP"], (0, 5): ["F9"],  # 5 frames, saved as success
        (1, 0): ["LEFT"], (1, 4): ["F10"],  # 4 frames, saved as failure
        (2, 0): ["HOME"], (2, 2): ["F11"],  # discarded
        (3, 0): ["F12"],  # quit
    }
    ticks = []

    def on_tick(t: T.Tick) -> None:
        ticks.append(t)
        for name in script.get((t.episode, t.frame), []):
            kb.key_callback(KEY[name])

    s = T.run_teleop(cfg, choice, device=kb, on_tick=on_tick)
    assert s["saved"] == 2 and s["discarded"] == 1 and s["labels"] == [True, False] and s["recorded_frames"] == 9
    root = tmp_path / "demos"
    assert check_dataset(root) == ([], [])
    ds = Dataset(root)
    assert ds.num_episodes == 2 and [r["length"] for r in ds.episodes] == [5, 4]
    assert [r["source"] for r in ds.episodes] == ["teleop", "teleop"]
    assert [r["success"] for r in ds.episodes] == [True, False]
    assert [json.loads(r["metadata"])["seed"] for r in ds.episodes] == [5, 6]

    expected = [[[0.5, 0, 0, 1]] * 3 + [[0, 0, 0, 1]] * 2, [[0, 0.5, 0, 1]] * 3 + [[0, 0, 0, 1]]]
    env = sim.make(cfg.task.env_id, max_episode_steps=100)
    try:
        for i, want in enumerate(expected):
            ep = ds.episode(i)
            np.testing.assert_array_equal(ep["action"], np.asarray(want, np.float32))
            assert ep["next.done"][-1] and not ep["next.done"][:-1].any()
            assert bool(ep["next.truncated"][-1]) == (i == 1)  # a person's failure is a cut-off, success terminal
            # Replaying the recorded actions from the recorded seed reproduces the recorded
            # states: the actions stored are the ones the env executed.
            obs, _ = env.reset(seed=5 + i)
            for t, a in enumerate(ep["action"]):
                np.testing.assert_allclose(ep["observation.ee_pos"][t], obs["ee_pos"], atol=1e-6)
                obs = env.step(a)[0]
            final = np.concatenate([np.ravel(obs[f.name]) for f in ds.spec.state_fields])
            np.testing.assert_allclose(ep["final.observation.state"], final, atol=1e-5)
    finally:
        env.close()
    assert ticks[-1] == T.Tick(tick=len(ticks) - 1, episode=3, frame=0)


def test_config_errors_and_defaults(monkeypatch, capsys):
    cfg, _ = T.compose(["viewer=false"])
    # configs/teleop.yaml spells out the same defaults the device classes use
    assert T._plain(cfg.keyboard["keys"]) == T.DEFAULT_KEYS
    assert T._plain(cfg.gamepad.axes) == T.DEFAULT_GAMEPAD_AXES
    assert T._plain(cfg.gamepad.buttons) == T.DEFAULT_GAMEPAD_BUTTONS
    assert T._plain(cfg.spacemouse.axes) == T.DEFAULT_SPACEMOUSE_AXES
    for override, message in [("device=joystick", "device=joystick: allowed: keyboard, gamepad, spacemouse"),
                              ("speed=1.5", r"speed=1.5: must be in \(0, 1\]"),
                              ("keyboard.hold_time=0", "keyboard.hold_time=0.0: must be > 0"),
                              ("spede=0.3", "did you mean 'speed'"),
                              ("+keyboard.keys.jump=[N]", "keyboard.keys.jump: unknown action")]:
        with pytest.raises(T.TeleopConfigError, match=message):
            T.compose([override])
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(T.TeleopConfigError, match="viewer=true needs a display"):
        T.run_teleop(T.compose([])[0])
    with pytest.raises(SystemExit) as exit_:
        T.main(["viewer=false"])
    assert exit_.value.code == 2 and "device=keyboard needs viewer=true" in capsys.readouterr().err


def test_automatic_ends_success_hold_and_time_limit(tmp_path, capsys):
    def session(*overrides, keys=None):
        cfg, choice = T.compose(["task=panda_reach", "viewer=false", f"out={tmp_path / 'auto'}", *overrides])
        kb = T.make_keyboard(cfg)

        def on_tick(t: T.Tick) -> None:
            for name in (keys or {}).get((t.episode, t.frame), []):
                kb.key_callback(KEY[name])

        return T.run_teleop(cfg, choice, device=kb, on_tick=on_tick)

    # success everywhere (a 5 m threshold): saved as success once it has held for 0.2 s = 2 steps;
    # a save before anything is recorded is ignored
    s = session("episodes=1", "success_hold=0.2", "task.kwargs.success_threshold=5.0", keys={(0, 0): ["F9"]})
    assert s["labels"] == [True] and s["recorded_frames"] == 2
    assert "nothing recorded yet; save_success ignored" in capsys.readouterr().out
    ep = Dataset(tmp_path / "auto").episode(0)
    assert ep["next.done"][-1] and not ep["next.truncated"][-1]
    # the time limit: saved with the env's label (a truncation), or dropped
    s = session("episodes=1", "max_episode_steps=4", "auto_end_on_success=false")
    assert s["labels"] == [False] and s["episodes"] == 2
    ep = Dataset(tmp_path / "auto").episode(1)
    assert len(ep["action"]) == 4 and ep["next.truncated"][-1]
    s = session("max_episode_steps=3", "save_on_time_limit=false", keys={(2, 1): ["F12"]})
    assert s["saved"] == 0 and s["discarded"] == 3 and s["episodes"] == 2
