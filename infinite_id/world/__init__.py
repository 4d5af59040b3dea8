"""The miniature world: a procedural portrait renderer and captions that stand in for real photos offline."""
