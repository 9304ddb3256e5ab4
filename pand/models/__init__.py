"""Models: open_clip teacher (:mod:`.teacher`; its preprocessing as a spec: :mod:`.clip_preprocess`), student registry
(:mod:`.students`), alignment heads (:mod:`.align`)."""
from .students import Student, create_student, is_student, list_students, register_student

__all__ = ["Student", "create_student", "is_student", "list_students", "register_student"]
