"""Plumbing every part may use: one way to wait, to run a command, to name and label what a run
creates, containers, node images, relays and the run's state on disk.
"""
