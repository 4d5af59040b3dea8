"""retrain --jobs: stages start only after their inputs, never more than N at once, failures stop dependents."""

from __future__ import annotations

import json

import pytest

from infinite_id.world.stages import STAGE_TABLE
from infinite_id.world.trainers.retrain import (
    check_dependencies,
    ready_stages,
    retrain,
    run_parallel,
)


def test_ready_stages_put_the_long_chain_first():
    ready = ready_stages(list(STAGE_TABLE), finished=[])
    # the VAE's loss networks first (the chain VAE -> latent cache -> base -> adapters hangs on them)
    assert ready[:2] == ["face_encoder", "attributes"] and ready[2:4] == ["clip", "landmarks"]
    assert "vae" not in ready and "base" not in ready and "adapter_joint" not in ready
    inputs = ["vae", "clip", "latent_cache", "attributes", "landmarks"]
    assert "base" in ready_stages(["base", "adapter_joint"], finished=inputs)
    assert ready_stages(["adapter_joint"], finished=[*inputs, "base"]) == []  # face_encoder missing


def test_a_stage_without_its_inputs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="base needs vae, clip, latent_cache, attributes, landmarks"):
        check_dependencies(["base"], finished=[])
    check_dependencies(["base"], finished=["vae", "clip", "latent_cache", "attributes", "landmarks"])
    with pytest.raises(ValueError, match="adapter_joint needs base"):
        retrain(tmp_path, only=["adapter_joint", "face_encoder"], quick=True)


class FakeStage:
    """A stage process that finishes after ``polls`` polls, writing its metrics as a real stage does."""

    def __init__(self, out, stage, log, fail=False, polls=2):
        self.out, self.stage, self.log, self.fail, self.left = out, stage, log, fail, polls

    def poll(self):
        self.left -= 1
        if self.left > 0:
            return None
        if self.fail:
            return 1
        (self.out / self.stage).mkdir(exist_ok=True)
        (self.out / self.stage / "metrics.json").write_text(json.dumps({"metrics": {"stage": self.stage}}))
        self.log.append(("end", self.stage))
        return 0


def _fake_launcher(log, failing=()):
    def launch(out, stage, quick, force):
        running = {s for kind, s in log if kind == "start"} - {s for kind, s in log if kind == "end"}
        log.append(("start", stage))
        log.append(("running", len(running) + 1))
        return FakeStage(out, stage, log, fail=stage in failing, polls=2 + len(stage) % 3)

    return launch


def test_parallel_run_respects_dependencies_and_the_job_limit(tmp_path):
    log = []
    seconds = run_parallel(tmp_path, list(STAGE_TABLE), jobs=2, launch=_fake_launcher(log), poll_seconds=0)
    assert set(seconds) == set(STAGE_TABLE)
    assert max(n for kind, n in log if kind == "running") == 2
    events = [(kind, s) for kind, s in log if kind != "running"]
    for stage, needs in ((n, s.inputs) for n, s in STAGE_TABLE.items()):
        for need in needs:
            assert events.index(("end", need)) < events.index(("start", stage)), (need, stage)


def test_a_failed_stage_stops_its_dependents_only(tmp_path):
    log = []
    with pytest.raises(RuntimeError) as error:
        run_parallel(tmp_path, list(STAGE_TABLE), jobs=3, launch=_fake_launcher(log, failing={"vae"}), poll_seconds=0)
    message = str(error.value)
    assert "vae (exit code 1" in message and "base (not started" in message and "adapter_joint (not started" in message
    started = {s for kind, s in log if kind == "start"}
    assert {"face_encoder", "clip", "landmarks", "attributes", "face_encoder_eval"} <= started
    assert "base" not in started


def test_jobs_run_real_stage_processes(tmp_path):
    # One real child process (the fakes above cover the scheduling): its log, its metrics and the summary.
    summary = retrain(tmp_path, only=["landmarks"], quick=True, jobs=2)
    assert set(summary) == {"landmarks"} and summary["landmarks"]["train_seconds"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary
    assert (tmp_path / "logs" / "landmarks.log").is_file()
    assert (tmp_path / "landmarks" / "model.safetensors").is_file()


def test_a_stage_finished_by_another_retrain_process_stays_in_the_summary(tmp_path, monkeypatch):
    # Two retrain processes on one folder (one stage each, as the long v2 stages run): the one that ends last must
    # not drop the other's entry from OUT/metrics.json.
    from infinite_id.world.stages import Stage

    def fake_trainer(stage_dir, config, progress=True):
        (tmp_path / "metrics.json").write_text(json.dumps({"attributes_eval": {"accuracy_style": 1.0}}))
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "metrics.json").write_text(json.dumps({"metrics": {"error_px": 1.0}}))
        return {"error_px": 1.0}

    monkeypatch.setattr(Stage, "load_trainer", lambda self: fake_trainer)
    summary = retrain(tmp_path, only=["landmarks"], quick=True)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == summary
    assert written["attributes_eval"] == {"accuracy_style": 1.0} and written["landmarks"]["error_px"] == 1.0
