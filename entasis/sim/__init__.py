"""Offline market: a seeded simulator (:mod:`.market`, :mod:`.options`) and a simulated exchange
(:mod:`.exchange`, venues in ``venue_*``) with fault injection (:mod:`.faults`) and replay of real
candle files (:mod:`.replay`). ``entasis sim-exchange serve`` runs it (:mod:`.cli`).
"""
