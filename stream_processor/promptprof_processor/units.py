"""Units shared by every part of the processor (a leaf module: it imports nothing)."""

NS_PER_S = 1_000_000_000
