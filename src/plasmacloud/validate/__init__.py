"""Validation: the cluster checklist and its reports."""
