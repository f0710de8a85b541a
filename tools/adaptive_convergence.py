"""Defended accuracy against an adaptive attack's number of steps: see diffdefense.reference.adaptive_convergence."""

from diffdefense.reference.adaptive_convergence import main

if __name__ == "__main__":
    main()
