"""Hardware drivers, one folder per integration."""
