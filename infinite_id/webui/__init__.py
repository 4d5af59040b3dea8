"""The web UI (``infinite-id serve``): Gradio, on top of :mod:`infinite_id.generation`. See docs/webui.md."""

from .app import ServeLimits, WebSession, build_app, launch

__all__ = ["ServeLimits", "WebSession", "build_app", "launch"]
