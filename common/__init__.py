"""Plain types shared by every package (no MuJoCo, torch or ROS imports here)."""
