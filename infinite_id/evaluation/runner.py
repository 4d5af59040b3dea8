"""Run an evaluation: methods x identities x prompts x seeds (x ID scales), scored as images are made, resumable.

Layout of an output folder::

    settings.json      everything that decides the numbers (checked on resume)
    records.jsonl      one line per scored image, appended and fsync'ed as it is produced
    images/<method>/<identity>/<set>-<prompt>-s<seed>-x<scale>.png

An interrupted run (Ctrl-C, a crash, a killed job) continues where it stopped: finished images are skipped by
key, a half-written last line of ``records.jsonl`` is dropped, and an image whose record never got written is
generated again. Resuming with different settings is refused, with the differences listed, so one folder never
mixes numbers from two setups.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..controls import DEFAULT_GUIDANCE, DEFAULT_ID_SCALE, DEFAULT_STEPS
from ..deprecation import renamed_names
from ..errors import InfiniteIDError, MissingInputError, UserInputError
from ..outputs import atomic_write, check_output_dir
from .methods import Method
from .metrics import OTHER_PHOTOS_DIR, ClipScorer, DinoScorer, FaceSimilarity
from .prompt_sets import PromptSet

__all__ = [
    "EvalSettings",
    "EvaluationRunner",
    "EvaluationIdentity",
    "ResumeMismatchError",
    "check_eval_output",
    "load_identities",
    "read_records",
    "record_key",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SETTINGS_FILE = "settings.json"
RECORDS_FILE = "records.jsonl"
#: Settings that may change between a run and its resumption (they do not change the numbers).
VOLATILE_SETTINGS = ("device", "dtype", "started", "version")


class ResumeMismatchError(InfiniteIDError, RuntimeError):
    """The output folder holds results made with other settings."""


@dataclass
class EvaluationIdentity:
    """One person: reference photo(s) the methods condition on, the class word that fills the prompts'
    ``{class_word}`` slot, and optionally ``others``: other photos of the person, used only to score the
    copy-paste gap (is the generated face the person, or a copy of the reference photo?)."""

    name: str
    images: list[Path]
    class_word: str = "person"
    others: list[Path] = field(default_factory=list)

    def fingerprint(self) -> list[str]:
        return _fingerprint(self.images)

    def settings(self) -> dict[str, Any]:
        """What the settings record of this identity (the other photos only where there are some, so older
        evaluations without them still resume)."""
        data: dict[str, Any] = {"class_word": self.class_word, "photos": self.fingerprint()}
        if self.others:
            data["other_photos"] = _fingerprint(self.others)
        return data


def _fingerprint(paths: Sequence[Path]) -> list[str]:
    return [f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}" for p in paths]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_identities(folder: str | Path, class_word: str = "person") -> list[EvaluationIdentity]:
    """Identities from a folder: each image file is one person (named by its stem), each sub-folder of images is
    one person with several reference photos, and that sub-folder's own ``others/`` folder (if any) holds other
    photos of the person, scored against for the copy-paste gap but never given to a method. An optional
    ``identities.json`` gives class words: ``{"name": "woman"}`` or ``{"name": {"class_word": "woman"}}``; others
    get ``class_word``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"identity folder {folder} does not exist")
    words: dict[str, str] = {}
    meta = folder / "identities.json"
    if meta.is_file():
        data = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise UserInputError(f"{meta} must map identity names to class words")
        words = {k: (v["class_word"] if isinstance(v, dict) else str(v)) for k, v in data.items()}
    identities = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            identities.append(EvaluationIdentity(entry.stem, [entry], words.get(entry.stem, class_word)))
        elif entry.is_dir():
            photos = _images_in(entry)
            others_dir = entry / OTHER_PHOTOS_DIR
            others = _images_in(others_dir) if others_dir.is_dir() else []
            if others and not photos:
                raise UserInputError(
                    f"{entry} has other photos in {OTHER_PHOTOS_DIR}/ but no reference photo: put the photo the "
                    f"methods condition on in {entry} itself"
                )
            if photos:
                word = words.get(entry.name, class_word)
                identities.append(EvaluationIdentity(entry.name, photos, word, others))
    names = [i.name for i in identities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserInputError(f"identity names must be unique in {folder}: {duplicates}")
    if not identities:
        raise UserInputError(f"no reference photos ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    unknown = sorted(set(words) - set(names))
    if unknown:
        logger.warning("identities.json names %s, which have no photos in %s", unknown, folder)
    return identities


@dataclass
class EvalSettings:
    """Everything recorded with the results. ``model``/``adapter`` are descriptions (paths or hub ids)."""

    model: str
    adapter: str
    methods: list[str]
    seeds: list[int]
    id_scale: float = DEFAULT_ID_SCALE
    curve_scales: list[float] = field(default_factory=list)
    curve_methods: list[str] = field(default_factory=list)
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    clip_model: str | None = None
    dino_model: str | None = None
    face_encoder: str | None = None
    training_face_encoder: str | None = None
    missing_face_policy: str = "face_sim counts an image without a detected face as 0; face_sim_detected leaves it out"
    device: str = "cpu"
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_key(method: str, identity: str, prompt_set: str, prompt_index: int, seed: int, scale: float) -> str:
    return f"{method}/{identity}/{prompt_set}/{prompt_index}/{seed}/{scale:g}"


def read_records(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a ``records.jsonl``. A torn last line (an interrupted write) is dropped, and with ``repair``
    cut from the file; a corrupt line elsewhere is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records, good_bytes = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_bytes += len(line) + (1 if i < len(lines) - 1 else 0)
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1 or all(not rest.strip() for rest in lines[i + 1 :]):
                logger.warning("dropping a half-written last record in %s", path)
                if repair:
                    with open(path, "r+b") as fh:
                        fh.truncate(good_bytes)
                break
            raise UserInputError(f"{path}: line {i + 1} is corrupt ({exc}); fix or delete it to resume") from exc
        good_bytes += len(line) + 1
    return records


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"]


def _save_image_atomic(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


@dataclass
class _Job:
    method: Method
    identity: EvaluationIdentity
    prompt_set: str
    prompt_index: int
    prompt: str
    seed: int
    scale: float

    @property
    def key(self) -> str:
        m, i = self.method.name, self.identity.name
        return record_key(m, i, self.prompt_set, self.prompt_index, self.seed, self.scale)

    def image_path(self) -> Path:
        name = f"{self.prompt_set}-{self.prompt_index}-s{self.seed}-x{self.scale:g}.png"
        return Path("images", self.method.name, self.identity.name, name)


def is_eval_output(folder: Path) -> bool:
    """True when ``folder`` holds an evaluation (its ``settings.json`` is one), which a rerun resumes."""
    try:
        data = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"methods", "seeds", "model"} <= set(data)


def check_eval_output(output: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an output folder that is not new, empty or an earlier evaluation (resumed, never wiped)."""
    check_output_dir(
        output, what="--output", command="infinite-id eval", is_own=is_eval_output, inputs=inputs, overwrite=None
    )


class EvaluationRunner:
    """Generate and score every (method, identity, prompt, seed, scale) once, appending records as it goes.

    Args:
        pipe: an Infinite-ID pipeline with its adapter loaded (and, for photos, the adapter's face analyzer set).
        output_dir: where settings, records and images go.
        settings: what is recorded and checked on resume.
        methods, identities, prompt_sets: what to evaluate.
        clip, face, dino: the scorers; any may be ``None`` (its columns are then absent).
        generator_device: where the seeded noise is drawn (``"cpu"`` keeps seeds comparable across devices).
    """

    def __init__(
        self,
        pipe,
        output_dir: str | Path,
        settings: EvalSettings,
        methods: Sequence[Method],
        identities: Sequence[EvaluationIdentity],
        prompt_sets: Sequence[PromptSet],
        clip: ClipScorer | None = None,
        face: FaceSimilarity | None = None,
        dino: DinoScorer | None = None,
        generator_device: str = "cpu",
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.pipe = pipe
        self.output_dir = Path(output_dir)
        self.settings = settings
        self.methods = list(methods)
        self.identities = list(identities)
        self.prompt_sets = list(prompt_sets)
        self.clip, self.face, self.dino = clip, face, dino
        self.generator_device = generator_device
        self.progress = progress
        # record which metric models were used even when the caller did not describe them
        if clip is not None and settings.clip_model is None:
            settings.clip_model = clip.describe()
        if face is not None and settings.face_encoder is None:
            settings.face_encoder = face.describe()
        if dino is not None and settings.dino_model is None:
            settings.dino_model = dino.describe()
        unknown_curve = set(settings.curve_methods) - {m.name for m in self.methods}
        if unknown_curve:
            raise UserInputError(f"curve methods {sorted(unknown_curve)} are not among the evaluated methods")

    # ------------------------------------------------------------------ settings and resume
    def full_settings(self) -> dict[str, Any]:
        data = self.settings.to_dict()
        data["methods"] = [m.to_dict() for m in self.methods]
        data["prompt_sets"] = [p.to_dict() for p in self.prompt_sets]
        data["identities"] = {i.name: i.settings() for i in self.identities}
        return data

    @property
    def records_path(self) -> Path:
        return self.output_dir / RECORDS_FILE

    def _prepare_output(self) -> None:
        check_eval_output(self.output_dir, [p for i in self.identities for p in (*i.images, *i.others)])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        settings = self.full_settings()
        path = self.output_dir / SETTINGS_FILE
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            stable_old = {k: v for k, v in old.items() if k not in VOLATILE_SETTINGS}
            stable_new = {k: v for k, v in settings.items() if k not in VOLATILE_SETTINGS}
            differences = _diff(stable_old, stable_new)
            if differences:
                raise ResumeMismatchError(
                    f"{self.output_dir} holds an evaluation with other settings, so it cannot be resumed:\n  "
                    + "\n  ".join(differences[:20])
                    + "\nUse another --output folder, or the same settings to continue."
                )
        else:
            atomic_write(path, json.dumps(settings, indent=2, default=str))

    # ------------------------------------------------------------------ jobs
    def jobs(self) -> list[_Job]:
        """Every image the evaluation needs, in generation order."""
        out = []
        curve = set(self.settings.curve_methods)
        for identity in self.identities:
            for prompt_set in self.prompt_sets:
                for index, prompt in enumerate(prompt_set.render(identity.class_word)):
                    for seed in self.settings.seeds:
                        for method in self.methods:
                            scales = [self.settings.id_scale]
                            if method.name in curve and method.uses_identity_scale:
                                scales += [s for s in self.settings.curve_scales if s != self.settings.id_scale]
                            for scale in scales:
                                out.append(_Job(method, identity, prompt_set.name, index, prompt, seed, scale))
        return out

    @staticmethod
    def _groups(jobs: list[_Job]) -> Iterator[list[_Job]]:
        """Jobs served by one pipeline call: same identity, prompt, seed, scale and call key."""
        groups: dict[tuple, list[_Job]] = {}
        for job in jobs:
            call = job.method.call_key(job.prompt)
            key = (job.identity.name, job.prompt_set, job.prompt_index, job.seed, job.scale, call)
            groups.setdefault(key, []).append(job)
        yield from groups.values()

    # ------------------------------------------------------------------ scoring helpers
    def _references(self, identity: EvaluationIdentity, cache: dict) -> dict[str, Any]:
        if identity.name not in cache:
            from ..faces.image_io import load_image

            photos = [load_image(p) for p in identity.images]
            refs: dict[str, Any] = {"photos": photos}
            if self.clip is not None:
                refs["clip"] = self.clip.image_embeds(photos)
            if self.dino is not None:
                refs["dino"] = self.dino.image_embeds(photos)
            if self.face is not None:
                refs["face"] = self.face.reference(photos, names=[str(p) for p in identity.images])
                if identity.others:
                    others = [load_image(p) for p in identity.others]
                    refs["face_other"] = self.face.reference(others, [str(p) for p in identity.others], other=True)
            refs["tokens"] = self.pipe.encode_identity(id_images=photos)
            cache[identity.name] = refs
        return cache[identity.name]

    def score(self, image: Image.Image, prompt: str, refs: dict[str, Any]) -> dict[str, Any]:
        scores: dict[str, Any] = {}
        if self.clip is not None:
            scores["clip_t"] = float(self.clip.clip_t([image], prompt)[0])
            scores["clip_i"] = float(self.clip.clip_i([image], refs["clip"])[0])
        if self.dino is not None:
            scores["dino"] = float(self.dino.similarity([image], refs["dino"])[0])
        if self.face is not None:
            scores.update(self.face.score(image, refs["face"], refs.get("face_other")).to_dict())
        return scores

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict[str, Any]]:
        """Generate and score what is not done yet; returns all records (old and new)."""
        self._prepare_output()
        records = read_records(self.records_path, repair=True)
        done = {r["key"] for r in records}
        todo = [job for job in self.jobs() if job.key not in done]
        total, finished = len(done) + len(todo), len(done)
        if done:
            logger.info("resuming: %d of %d images already scored", len(done), total)
        refs_cache: dict[str, Any] = {}
        # every photo's face is checked before the first image, so a photo without one stops the run at once
        for identity in {job.identity.name: job.identity for job in todo}.values():
            self._references(identity, refs_cache)
        with open(self.records_path, "a", encoding="utf-8") as out:
            for group in self._groups(todo):
                first = group[0]
                refs = self._references(first.identity, refs_cache)
                want_text = any(j.method.stream == "text_images" for j in group)
                start = time.perf_counter()
                result = self.pipe(
                    first.method.prompt_for(first.prompt),
                    negative_prompt=self.settings.negative_prompt,
                    id_tokens=refs["tokens"],
                    num_inference_steps=self.settings.num_inference_steps,
                    guidance_scale=self.settings.guidance_scale,
                    height=self.settings.height,
                    width=self.settings.width,
                    id_scale=first.scale,
                    return_text_stream=want_text,
                    generator=torch.Generator(self.generator_device).manual_seed(first.seed),
                    **first.method.pipeline_kwargs,
                )
                elapsed = time.perf_counter() - start
                for job in group:
                    image = getattr(result, job.method.stream)[0]
                    relative = job.image_path()
                    _save_image_atomic(image, self.output_dir / relative)
                    record = {
                        "key": job.key,
                        "method": job.method.name,
                        "identity": job.identity.name,
                        "prompt_set": job.prompt_set,
                        "prompt_index": job.prompt_index,
                        "prompt": job.prompt,
                        "seed": job.seed,
                        "id_scale": job.scale,
                        "image": relative.as_posix(),
                        "generation_s": round(elapsed, 4),
                        **self.score(image, job.prompt, refs),
                    }
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    with contextlib.suppress(OSError):
                        os.fsync(out.fileno())
                    records.append(record)
                    finished += 1
                    if self.progress is not None:
                        self.progress(finished, total)
        return records


__getattr__ = renamed_names(__name__, {"Identity": "EvaluationIdentity"}, globals())  # deprecated alias, one release
