"""Thin Celery shells with explicit names: parse ids, call one job function, decide retry or fail."""
