"""Runtime shared by every task and training loop: devices, torchrun process groups."""
