"""The engine every intent family runs on: the Celery app and its pools, the step task base
class, hand-off, step context, the registry, and each process's resources."""
