"""The two kinds of batch, each its own stream of batches: what the controller chooses between."""
COLLAGE, REGULAR = "collage", "regular"
KINDS = (REGULAR, COLLAGE)  # the loader's two streams, in its order
