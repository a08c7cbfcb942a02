"""pybullet worlds as Gymnasium environments (no learning code). Importing `sim` registers them:

- ``rlab/RCCar-v0`` (`sim.rccar.RCCarEnv`): pybullet's racecar on a closed track (`sim.racetrack`).
- ``rlab/IndoorFlight-v0`` (`sim.flight.IndoorFlightEnv`): a camera drone in generated indoor worlds
  (`sim.indoor`, textures from `sim.textures`) or a user's mesh.

pybullet itself is imported only when an environment is built.
"""

import gymnasium as gym

if "rlab/RCCar-v0" not in gym.registry:
    gym.register(id="rlab/RCCar-v0", entry_point="sim.rccar:RCCarEnv")
if "rlab/IndoorFlight-v0" not in gym.registry:
    gym.register(id="rlab/IndoorFlight-v0", entry_point="sim.flight:IndoorFlightEnv")
