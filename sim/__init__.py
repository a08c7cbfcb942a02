"""pybullet worlds as Gymnasium environments (no learning code). Importing `sim` registers them:

- ``rlab/RCCar-v0`` (`sim.rccar.RCCarEnv`): pybullet's racecar on a closed track (`sim.racetrack`).

pybullet itself is imported only when an environment is built.
"""

import gymnasium as gym

if "rlab/RCCar-v0" not in gym.registry:
    gym.register(id="rlab/RCCar-v0", entry_point="sim.rccar:RCCarEnv")
