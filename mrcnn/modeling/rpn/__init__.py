"""The region proposal network: head, proposals, anchor targets and losses.
"""
