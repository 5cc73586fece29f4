"""Drawing: instances, boxes, masks (`instances`), statistics tables and plots
(`stats`), one-line array summaries (`log`); `mrcnn.visualize` re-exports them.
"""
