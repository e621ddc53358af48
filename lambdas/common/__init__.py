"""Helpers shared by the Lambda handlers: settings from the environment, event checks, one-line rejections."""
