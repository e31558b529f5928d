"""SimPy models of a bus fleet that drive the real parts under simulated time."""
