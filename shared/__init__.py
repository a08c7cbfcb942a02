"""The lab's core: policy-gradient math (`shared.rl`), the LM rollout loop (`shared.lm`), runs
(`shared.tracking`), galleries (`shared.gallery`), configs (`shared.config`) and the `rlab` CLI.

Nothing here imports a track package; tracks import from here.
"""
