"""The safety layer and the takeover mux, without ROS: every rule can be broken by a bad command."""

import numpy as np
import pytest

from robot.safety import CartesianCommand, SafetyLayer, SafetyLimits
from robot.takeover import TakeoverConfig, TakeoverMux

LIMITS = SafetyLimits((0.3, -0.3, 0.0), (0.7, 0.3, 0.4), max_speed=0.2, max_accel=2.0)


def ready(now=0.0, pos=(0.5, 0.0, 0.2)):
    s = SafetyLayer(LIMITS)
    s.update_state(np.array(pos), now)
    return s


def cmd(v, now, grip=1.0, yaw=0.0):
    return CartesianCommand(np.array(v, float), yaw, grip, now)


def test_passes_a_safe_command_unchanged():
    s = ready()
    s.last, s.last_time = np.array([0.05, 0, 0]), 0.0  # already moving at that speed
    out, st = s.filter(cmd([0.05, 0, 0], 0.01), 0.01)
    np.testing.assert_allclose(out.linear, [0.05, 0, 0])
    assert not st.held and not st.clipped


def test_speed_and_acceleration_limits():
    s = ready()
    out, st = s.filter(cmd([1.0, 1.0, 0], 0.0), 0.0)  # from rest: dv limited to max_accel * 1 ms
    assert "acceleration" in st.clipped and np.linalg.norm(out.linear) <= 2.0 * 1e-3 + 1e-9
    t = 0.0
    for _ in range(50):  # ramps up at <= max_accel, never above max_speed
        t += 0.01
        prev = out.linear
        s.update_state(np.array([0.5, 0.0, 0.2]), t)
        out, st = s.filter(cmd([1.0, 1.0, 0], t), t)
        assert np.linalg.norm(out.linear - prev) <= 2.0 * 0.01 + 1e-9
        assert np.linalg.norm(out.linear) <= 0.2 + 1e-9
    np.testing.assert_allclose(out.linear, [0.2 / np.sqrt(2)] * 2 + [0], atol=1e-6)  # direction kept


def test_workspace_box_clips_motion_towards_the_wall_only():
    s = ready(pos=(0.69, 0.0, 0.2))  # 1 cm from the +x wall
    s.last = np.array([0.2, 0.0, 0.0])
    out, st = s.filter(cmd([0.2, 0, 0], 0.0), 0.0)
    assert "workspace" in st.clipped and 0.69 + out.linear[0] * LIMITS.lookahead <= 0.7 + 1e-9
    s = ready(pos=(0.75, 0.0, 0.2))  # outside (e.g. pushed there): only motion back in is allowed
    s.last = np.array([0.1, 0.0, 0.0])
    out, _ = s.filter(cmd([0.1, 0, 0], 0.0), 0.0)
    assert out.linear[0] <= 0.0
    s.last = np.array([-0.1, 0.0, 0.0])
    out, _ = s.filter(cmd([-0.1, 0, 0], 0.0), 0.0)
    assert out.linear[0] == pytest.approx(-0.1)


def test_nonfinite_commands_and_state_are_refused():
    s = ready()
    out, st = s.filter(cmd([np.nan, 0, 0], 0.0), 0.0)
    assert st.held and "non-finite" in st.reasons[0] and not out.linear.any() and s.rejected_nonfinite == 1
    out, st = s.filter(CartesianCommand(np.zeros(3), np.inf, 1.0, 0.0), 0.0)
    assert st.held
    assert not s.update_state(np.array([np.nan, 0, 0]), 0.05)  # ignored: the last good state stays
    assert s.ee_pos[0] == 0.5


def test_watchdog_holds_on_stale_state_or_command():
    s = ready(now=0.0)
    s.filter(cmd([0.05, 0, 0], 0.0), 0.0)
    out, st = s.filter(cmd([0.05, 0, 0], 0.25), 0.25)  # state 0.25 s old > 0.2
    assert st.held and "arm state stale" in st.reasons and not out.linear.any()
    s.update_state(np.array([0.5, 0, 0.2]), 0.25)
    out, st = s.filter(cmd([0.05, 0, 0], 0.0), 0.4)  # command 0.4 s old > 0.3
    assert st.held and "command stale" in st.reasons
    out, st = SafetyLayer(LIMITS).filter(cmd([0.05, 0, 0], 0.0), 0.0)
    assert st.held and "no arm state yet" in st.reasons


def test_estop_latches_until_released_and_reset():
    s = ready()
    s.filter(cmd([0.1, 0, 0], 0.0), 0.0)
    s.estop(True)
    out, st = s.filter(cmd([0.1, 0, 0], 0.01, grip=-1.0), 0.01)
    assert st.held and "e-stop latched" in st.reasons and not out.linear.any()
    ok, why = s.reset_estop()
    assert not ok and "still pressed" in why
    s.estop(False)  # releasing the input does not un-latch
    assert s.filter(cmd([0.1, 0, 0], 0.02), 0.02)[1].held
    assert s.reset_estop()[0]
    assert not s.filter(cmd([0.001, 0, 0], 0.03), 0.03)[1].held


def test_limits_are_validated():
    with pytest.raises(ValueError, match="low < high"):
        SafetyLimits((0, 0, 0), (0, 1, 1))
    with pytest.raises(ValueError, match="max_speed must be > 0"):
        SafetyLimits((0, 0, 0), (1, 1, 1), max_speed=0.0)


# ---- takeover ----------------------------------------------------------------------


def test_takeover_replaces_the_policy_within_one_control_period_and_hands_back():
    mux = TakeoverMux(TakeoverConfig(blend_time=0.05, release_time=0.3))
    policy = cmd([0.1, 0, 0], 0.0, grip=1.0)
    t, dt = 0.0, 0.01  # a 100 Hz gate
    out, flag = mux.mix(policy, t)
    assert not flag and out is policy
    mux.human_input(np.array([0, 0.02, 0, 0, 0, 0]), None, t)  # inside the deadband: not a takeover
    assert not mux.mix(policy, t + dt)[1]
    t += dt
    weights = []
    for _ in range(10):  # person pushes +y for 0.1 s (one 10 Hz control period)
        t += dt
        mux.human_input(np.array([0, 1.0, 0, 0, 0, 0]), None, t)
        out, flag = mux.mix(policy, t)
        weights.append(mux.weight)
        assert flag
    assert weights == sorted(weights) and weights[0] < 1.0  # smooth ramp, not a jump
    np.testing.assert_allclose(out.linear, [0, 0.15, 0], atol=1e-9)  # fully the human's by then
    assert mux.interventions == 1
    # let go: holds still for release_time, then blends back to the policy
    t += dt
    mux.human_input(np.zeros(6), None, t)
    out, flag = mux.mix(policy, t)
    assert flag and abs(out.linear[0]) < 1e-9 and abs(out.linear[1]) < 1e-9
    for _ in range(60):
        t += dt
        out, flag = mux.mix(policy, t)
    assert not flag and out is policy


def test_takeover_gripper_button_and_bad_input():
    mux = TakeoverMux()
    mux.mix(cmd([0, 0, 0], 0.0, grip=1.0), 0.0)
    mux.human_input(np.zeros(6), -1.0, 0.01)  # button only: counts as intervening, closes
    out, flag = mux.mix(cmd([0, 0, 0], 0.01, grip=1.0), 0.01)
    assert flag and out.gripper == -1.0
    before = mux.human
    mux.human_input(np.array([np.nan, 0, 0, 0, 0, 0]), None, 0.02)
    mux.human_input(np.zeros(3), None, 0.02)
    assert mux.human is before  # NaN or wrongly sized input is ignored
