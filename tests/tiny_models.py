"""Test-suite access to the in-process model builders (they live in ``infinite_id.testing``)."""

from infinite_id.testing import *  # noqa: F403
from infinite_id.testing import FACE_DIM, save_tiny_base_model, tiny_image_encoder  # noqa: F401
