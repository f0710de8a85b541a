"""Lean runtime (no torch): arrives with the runtime issue."""
