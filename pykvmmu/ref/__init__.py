"""Pure-Python reference models (plain ints, no C core): the oracle the C core is tested against."""
