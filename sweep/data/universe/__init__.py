"""The embedded demo universe: generated images, a model zoo, universal difficulty, pretrained weights."""
