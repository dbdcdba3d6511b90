"""DragBench, the paper's benchmark: run the engine on its samples and score the results.

- `samples`: find samples under a folder, read them safely (their metadata is a pickle), shard them.
- `bench_run`: edit every sample and write results where the original evaluation scripts look.
- `dift`: the DIFT features (Stable Diffusion 2.1, t = 261, decoder block 1, 8 noise draws) that
  locate where a handle's content ended up.
- `metrics`: image fidelity (1 - LPIPS) and mean distance per sample, per category and overall.
"""

# Torch-free, for the command line's options and help.
DIFT_MODEL = "stabilityai/stable-diffusion-2-1"
METRICS = ("if", "md")
