"""inspectd daemon: watch an inbox, judge each image with an exported EfficientAD model, sort it."""
