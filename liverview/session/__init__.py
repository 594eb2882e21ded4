"""The open study as one Qt-free object: what the GUI shows and edits, and what the PACS work and the
command line can drive without a window (DESIGN.md: a thin GUI over a session, after napari)."""
from liverview.session.events import SessionEvent, SessionEventKind
from liverview.session.session import Session, StudyContext
from liverview.session.tasks import Task, TaskRegistry

__all__ = ["Session", "SessionEvent", "SessionEventKind", "StudyContext", "Task", "TaskRegistry"]
