"""From images to detections: molding / unmolding and the SavedModel export.
"""
