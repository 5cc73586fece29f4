"""From images to detections: molding / unmolding (`molding`), the SavedModel
export (`export`), and writing results out: COCO files and pictures for images
(`results`) and videos (`video`).
"""
