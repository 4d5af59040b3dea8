"""What the world is for: the paper's tables reproduced in miniature, the metrics' ceilings, the text-encoder probe,
and the documentation's pictures and example portraits."""
