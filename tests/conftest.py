import os


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
