"""The pipeline fed by real face analysis: photos, paths, arrays, IdentityCrops and embedding files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from infinite_id.faces import FaceEncoderInfo, IdentityCrop, NoFaceError

PROMPT = "a photo of a woman wearing a yellow sweater, on the beach"


def _pipe_for(make_pipe, info: FaceEncoderInfo):
    from infinite_id.models.projectors import IdentityProjectionConfig

    pipe = make_pipe("sd15", adapter=False)
    config = IdentityProjectionConfig(
        cross_attention_dim=pipe.unet.config.cross_attention_dim,
        face_dim=info.dim,
        clip_dim=pipe.image_encoder.config.hidden_size,
        clip_num_tokens=17,
    )
    torch.manual_seed(0)
    pipe.init_adapter(config, info)
    return pipe


@pytest.fixture(scope="module")
def analyzer():
    pytest.importorskip("insightface")
    from infinite_id.faces import get_face_analyzer

    return get_face_analyzer("insightface", model="buffalo_s")


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


def _tokens(pipe, **kwargs):
    return pipe.encode_identity(**kwargs)[0]


def test_paths_pil_arrays_and_crops_give_the_same_identity(make_pipe, analyzer, astronaut):
    from PIL import Image

    pipe = _pipe_for(make_pipe, analyzer.info)
    pipe.set_face_analyzer(analyzer)
    from_path = _tokens(pipe, id_images=str(astronaut))
    pil = Image.open(astronaut)
    torch.testing.assert_close(_tokens(pipe, id_images=pil), from_path)
    torch.testing.assert_close(_tokens(pipe, id_images=np.asarray(pil)), from_path)
    crop = analyzer.identity(astronaut)
    assert isinstance(crop, IdentityCrop)
    torch.testing.assert_close(_tokens(pipe, id_images=crop), from_path)
    # the crop's aligned face and embedding, given by hand, are the same identity too
    by_hand = _tokens(pipe, id_images=crop.clip_crop, face_embeds=crop.embedding)
    torch.testing.assert_close(by_hand, from_path)
    out = pipe(
        PROMPT,
        id_images=str(astronaut),
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images.shape == (1, 64, 64, 3)


def test_embedding_files(make_pipe, analyzer, astronaut, tmp_path):
    pipe = _pipe_for(make_pipe, analyzer.info)
    crop = analyzer.identity(astronaut)
    npy = tmp_path / "face.npy"
    np.save(npy, crop.embedding)
    expected = _tokens(pipe, id_images=crop.clip_crop, face_embeds=crop.embedding)
    torch.testing.assert_close(_tokens(pipe, id_images=crop.clip_crop, face_embeds=npy), expected)
    other = tmp_path / "dlib.safetensors"
    save_file(
        {"embedding": np.zeros((1, 512), "float32")},
        str(other),
        metadata={"backend": "dlib", "model": "x", "dim": "512"},
    )
    with pytest.raises(ValueError, match="dlib"):
        _tokens(pipe, id_images=crop.clip_crop, face_embeds=other)
    with pytest.raises(ValueError, match="2 face embeddings for 1"):
        _tokens(pipe, id_images=crop.clip_crop, face_embeds=np.stack([crop.embedding, crop.embedding]))


def test_no_face_names_the_file(make_pipe, analyzer, tmp_path):
    from PIL import Image

    pipe = _pipe_for(make_pipe, analyzer.info)
    pipe.set_face_analyzer(analyzer)
    blank = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(blank)
    with pytest.raises(NoFaceError, match="wall.png"):
        pipe(PROMPT, id_images=str(blank), num_inference_steps=1)


def test_adapter_from_another_face_encoder_is_refused(make_pipe, analyzer):
    pipe = _pipe_for(
        make_pipe, FaceEncoderInfo(backend="dlib", model="dlib_face_recognition_resnet_model_v1", dim=128)
    )
    with pytest.raises(ValueError, match="dlib.*insightface|insightface.*dlib"):
        pipe.set_face_analyzer(analyzer)
