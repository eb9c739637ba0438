"""The learning-rate schedule: linear warm-up per iteration, then step decay per epoch.

A torch LambdaLR stepped after every optimizer step, so its count t is the
number of steps taken, and step t + 1 runs at

    base_lr * min(1, (t + 1) / (warmup_epochs * n)) * gamma ** (epoch // step_epochs),

with n iterations per epoch and epoch = t // n counted from 0. With the
authors' defaults (2 warm-up epochs, step 4, gamma 0.1) epochs 1-4 run at the
base rate (after warm-up), 5-8 at a tenth, and so on, as their StepLR does. The
authors' warm-up starts at exactly 0; this one starts one iteration in
(1 / (warmup_epochs * n)), so no step is wasted. The count is saved in
last.pth (`schedule.state_dict()`) and restored on resume.
"""
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(t, iters_per_epoch, warmup_epochs=2, step_epochs=4, gamma=0.1):
    """The multiple of the base rate for the step after t steps (t = 0, 1, ...)."""
    warm = warmup_epochs * iters_per_epoch
    factor = min(1.0, (t + 1) / warm) if warm > 0 else 1.0
    if step_epochs and step_epochs > 0:
        factor *= gamma ** ((t // iters_per_epoch) // step_epochs)
    return factor


def warmup_step_schedule(optimizer, iters_per_epoch, warmup_epochs=2, step_epochs=4, gamma=0.1):
    """LambdaLR over the optimizer's current (base) rates; step it after each optimizer step."""
    return LambdaLR(optimizer, lambda t: lr_factor(t, iters_per_epoch, warmup_epochs, step_epochs, gamma))


def last_lr(schedule, group=0):
    """The rate the last optimizer step ran at (the optimizer already holds the next one)."""
    return schedule.base_lrs[group] * schedule.lr_lambdas[group](max(schedule.last_epoch - 1, 0))
