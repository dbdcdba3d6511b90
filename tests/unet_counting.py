"""A record of every UNet call of a test: gradients on or off, batch size and timestep(s)."""

import torch


class UNetCalls:
    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        timestep = torch.as_tensor(args[1] if len(args) > 1 else kwargs["timestep"]).reshape(-1)
        # one timestep for the whole batch, or one per row (a LoRA step)
        value = int(timestep[0]) if timestep.numel() == 1 else tuple(timestep.tolist())
        self.calls.append((torch.is_grad_enabled(), sample.shape[0], value))

    def take(self, with_timesteps: bool = False):
        """The calls since the last take: (grad, batch) or, `with_timesteps`, (grad, batch, timestep)."""
        calls, self.calls = self.calls, []
        return calls if with_timesteps else [(grad, batch) for grad, batch, _ in calls]
