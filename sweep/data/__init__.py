"""The data side: examples and their images, universal difficulty, correctness matrices, ReaL labels,
model zoos, and the two data sources (an image folder such as ImageNet's validation set, and the
embedded demo universe)."""
