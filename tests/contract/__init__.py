"""The contract suite: what every provider does alike, written once and run over each.

The providers and their fixtures are in ``providers`` (how a third one joins: its docstring).
"""
