"""Ray Serve HTTP endpoint for JAFFNet inspection (``serving.app:build_app``).

Light to import: the Serve deployments live in ``serving.app`` / ``serving.api`` /
``serving.model_deployment`` and are imported only by what runs them.
"""
