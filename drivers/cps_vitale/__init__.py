"""CPS and Vitale cards through PC/SC (cards issue)."""
