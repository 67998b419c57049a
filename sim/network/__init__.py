"""The mobile network: the operator's plan, the true radio environment, phones and signalling.

``plan`` and ``propagation`` hold what an operator knows (its sites and cells, textbook
propagation formulas); ``radio`` holds the simulated world's truth (shadowing, true
coverage) and must never be imported by ``sim.estimate``.
"""
