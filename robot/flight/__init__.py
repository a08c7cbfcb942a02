"""Flight track (CAD2RL): Monte Carlo value learning for collision-free flight from one camera."""
