"""Command-line options that several commands share, defined once (each call makes a fresh ``typer.Option``)."""

from __future__ import annotations

import typer

from ..controls import face_backend_choices


def face_backend_option():
    return typer.Option(
        "auto",
        "--face-backend",
        help=f"{', '.join(face_backend_choices())} (auto: the model's own, mini for the default model).",
    )


def face_model_option():
    return typer.Option(None, "--face-model", help="insightface pack (buffalo_l, antelopev2, ...).")


def face_model_dir_option():
    return typer.Option(None, "--face-model-dir", help="Folder with the face model files.")


def device_option():
    return typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps.")
