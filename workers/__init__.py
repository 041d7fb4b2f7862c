"""Celery workers: the app (celery_app), thin task shells (tasks/), the executor and drivers."""
