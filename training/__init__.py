"""PyTorch side of the project (import as ``diffdefense.training``): models, DDPM loss, training commands."""
