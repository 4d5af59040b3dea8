"""The world's small models (face encoder, face detector, attribute classifier, the base model's configs and its
compact tokenizer), where their weights live, and the metric models built from them."""
