"""Control features: ControlNet units, preprocessors (canny, scribble, lineart, pose, depth) and OpenPose poses."""
