"""The scene: who a person is, what a prompt controls, what changes per photo, and the renders and captions made
from them (numpy and Pillow only). See docs/world.md."""
