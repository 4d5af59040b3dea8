"""Errors raised by the face package: each one says which file and what to do about it."""

from __future__ import annotations

from ..errors import InfiniteIDError, UserInputError


class FaceError(UserInputError):
    """Base class of every face-related input error (a ``ValueError``, so callers may catch either)."""


class InvalidImageError(FaceError):
    """The input is not a usable image: missing, corrupt, truncated, not an image, too small or too large."""


class NoFaceError(FaceError):
    """No face was detected in the image."""


class FaceIndexError(FaceError, IndexError):
    """``face_index`` does not name one of the faces that were found."""


class FaceTooSmallError(FaceError):
    """The chosen face is too small to give a reliable identity embedding."""


class BackendUnavailableError(InfiniteIDError, ImportError):
    """A face backend cannot run here: its package or its model files are missing. The message says what to do."""
