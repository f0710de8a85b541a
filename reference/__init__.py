"""The PyTorch reference DiffDefense (import as ``diffdefense.reference``): what the runtime must match."""
