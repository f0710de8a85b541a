"""DiffDefense edge runtime: adversarial purification by latent optimisation through a small DDPM."""

__version__ = "0.1.0"
