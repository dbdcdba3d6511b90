"""The drag methods side by side, each a module with `drag(DragInputs) -> DragOutcome` over the
shared steps (motion supervision, point tracking, the guided UNet prediction, `common`):

* `dragdiffusion`: the paper's, optimise the latent at one timestep, then denoise;
* `gooddrag`: GoodDrag's, drag while denoising, supervised by the original's features;
* `fastdrag`: FastDrag's, warp the latent once, no optimisation.
"""

from . import dragdiffusion, fastdrag, gooddrag

METHODS = {"dragdiffusion": dragdiffusion, "gooddrag": gooddrag, "fastdrag": fastdrag}
